"""Study service functions: routes and the CLI call these with their session; the caller
commits (the request's session, or `session_scope` outside a request)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import optuna
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.core.db.engine import database_url
from service.core.db.models import EnqueuedConfig, Study, TrialRecord, utcnow
from service.core.errors import NotFound, StudyExists, StudyNotFound
from service.core.optuna_storage import get_storage
from service.core.states import StudyState
from service.integrations.notify import record_status_event
from service.studies.cache import (
    Version,
    VersionedCache,
    cached,
    cached_counts,
    study_version,
)
from service.studies.fusing import device_seconds_limit
from service.studies.pareto import (
    SeveralObjectives,
    is_multi_objective,
    objectives_of,
    optuna_directions,
    pareto_front,
)
from service.studies.queries import best_trial_id, best_values, trial_counts
from service.studies.schemas import (
    BestTrial,
    ParetoFront,
    StudyCreated,
    StudyDetail,
    StudySummary,
    TrialCounts,
)
from service.studies.search.space import space_warnings
from service.studies.spec import StudySpec, load_spec


def create_study(
    session: Session, spec: StudySpec, owner_token_id: int | None = None
) -> StudyCreated:
    """Create the Optuna study, then the service's row (flushed, not committed).

    Raises `StudyExists` if the name is taken; the session is then rolled back. The session
    must hold no write of its own yet: on SQLite that would block Optuna's insert.
    """
    if session.scalar(select(Study.id).where(Study.name == spec.name)) is not None:
        raise StudyExists(spec.name)
    storage = get_storage(database_url(session))
    # Optuna's study first, committed on its own connection: on SQLite a transaction of ours
    # holding the write lock would block Optuna's insert until the busy timeout.
    try:
        optuna_id = storage.create_new_study(optuna_directions(spec), f"hpo:{spec.name}")
    except optuna.exceptions.DuplicatedStudyError as e:
        raise StudyExists(spec.name) from e
    now = utcnow()
    deadline = (
        None
        if spec.budget.timeout_seconds is None
        else now + timedelta(seconds=spec.budget.timeout_seconds)
    )
    try:
        study = Study(
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            status=StudyState.RUNNING,
            optuna_study_id=optuna_id,
            n_trials=spec.budget.n_trials,
            slots_used=0,
            n_claims=0,
            n_failed=0,
            priority=spec.priority,
            n_running=0,
            max_parallel_trials=spec.budget.max_parallel_trials,
            device_seconds_limit=device_seconds_limit(spec.budget.device_hours),
            created_at=now,
            updated_at=now,
            deadline_at=deadline,
            owner_token_id=owner_token_id,
        )
        session.add(study)
        session.flush()
        session.add_all(
            EnqueuedConfig(study_id=study.id, position=i, params=params, claimed=False)
            for i, params in enumerate(spec.enqueue)
        )
        session.flush()
    except BaseException as e:
        # Our failed insert may hold SQLite's write lock: release it before Optuna's delete.
        session.rollback()
        storage.delete_study(optuna_id)
        if isinstance(e, IntegrityError):
            raise StudyExists(spec.name) from e
        raise
    return StudyCreated(
        id=study.id, name=study.name, status=study.status, warnings=space_warnings(spec)
    )


def get_study_row(session: Session, study_id: int) -> Study:
    """The study's row; raises `StudyNotFound`."""
    study = session.get(Study, study_id)
    if study is None:
        raise StudyNotFound(study_id)
    return study


def trial_records(session: Session, study_id: int) -> dict[int, TrialRecord]:
    """Service-side records of a study's trials, by Optuna trial id."""
    rows = session.scalars(
        select(TrialRecord).where(
            TrialRecord.study_id == study_id, TrialRecord.optuna_trial_id.is_not(None)
        )
    ).all()
    return {r.optuna_trial_id: r for r in rows if r.optuna_trial_id is not None}


def _direction(spec: StudySpec) -> str:
    # the spec's validators fill in each metric's natural direction
    return objectives_of(spec)[0].direction


_best_ids: VersionedCache[int | None] = VersionedCache(maxsize=256)


def best_trial(session: Session, study: Study, version: Version | None = None) -> BestTrial | None:
    """The complete trial with the best finite value (ties: the earliest); None for a
    multi-objective study, which has a front instead (`pareto`). Finding it is an aggregate
    over the study's complete trials, kept per study version (`studies.cache`); `version`:
    the study's, if the caller has it."""
    spec = load_spec(study.spec)
    if is_multi_objective(spec):
        return None
    trial_id = cached(
        _best_ids,
        session,
        study,
        lambda: best_trial_id(session, study.optuna_study_id, _direction(spec)),
        version,
    )
    if trial_id is None:
        return None
    best = get_storage(database_url(session)).get_trial(trial_id)
    tested = session.execute(
        select(TrialRecord.test_accuracy, TrialRecord.test_metrics).where(
            TrialRecord.optuna_trial_id == trial_id
        )
    ).first()
    test_accuracy = None if tested is None else tested.test_accuracy
    return BestTrial(
        trial_id=trial_id,
        number=best.number,
        value=float(best.value),  # type: ignore[arg-type]
        params=best.params,
        config={**spec.fixed, **best.params},
        test_accuracy=test_accuracy,
        test_metrics=(tested.test_metrics if tested is not None else None) or {},
    )


def _summary(study: Study, counts: TrialCounts, best_value: float | None) -> StudySummary:
    spec = load_spec(study.spec)
    return StudySummary(
        id=study.id,
        name=study.name,
        status=study.status,
        n_trials=study.n_trials,
        counts=counts,
        best_value=best_value,
        direction=_direction(spec),
        metric=spec.objective.metric,
        task=spec.dataset.builtin_task or "classification",
        objectives=objectives_of(spec),
        error=study.error,
        created_at=study.created_at,
        finished_at=study.finished_at,
    )


def summaries(session: Session, studies: Sequence[Study]) -> list[StudySummary]:
    """Summaries from two aggregate queries (counts by state, best value), however many
    trials the studies hold."""
    specs = {s.id: load_spec(s.spec) for s in studies}
    directions = {s.id: _direction(specs[s.id]) for s in studies}
    counts = trial_counts(session, [s.optuna_study_id for s in studies])
    single = [s for s in studies if not is_multi_objective(specs[s.id])]
    best = best_values(session, {s.optuna_study_id: directions[s.id] for s in single})
    return [_summary(s, counts[s.optuna_study_id], best.get(s.optuna_study_id)) for s in studies]


def list_studies(session: Session, limit: int = 100, offset: int = 0) -> list[StudySummary]:
    """Studies, newest first."""
    studies = session.scalars(
        select(Study).order_by(Study.id.desc()).limit(limit).offset(offset)
    ).all()
    return summaries(session, studies)


def get_study(session: Session, study_id: int) -> StudyDetail:
    """A study's summary, spec and best trial; raises `StudyNotFound`."""
    study = get_study_row(session, study_id)
    version = study_version(session, study)
    counts = cached_counts(session, study, version)
    best = best_trial(session, study, version)
    # The best trial's value is the best value: no second aggregate over the trials.
    summary = _summary(study, counts, None if best is None else best.value)
    return StudyDetail(
        **summary.model_dump(),
        spec=study.spec,
        best=best,
        warnings=space_warnings(load_spec(study.spec)),
        device_seconds=study.device_seconds or 0.0,
        device_seconds_limit=study.device_seconds_limit,
    )


def get_best(session: Session, study_id: int) -> BestTrial | None:
    """The study's best trial, None before one completed; raises `StudyNotFound`, or
    `SeveralObjectives` (409) for a multi-objective study."""
    study = get_study_row(session, study_id)
    if is_multi_objective(load_spec(study.spec)):
        raise SeveralObjectives(study_id)
    return best_trial(session, study)


def get_pareto(session: Session, study_id: int) -> ParetoFront:
    """The study's Pareto front (complete trials no other dominates); raises
    `StudyNotFound`."""
    return pareto_front(session, get_study_row(session, study_id))


def require_best(session: Session, study_id: int) -> BestTrial:
    """The study's best trial; raises `StudyNotFound`, or `NotFound` before one completed."""
    best = get_best(session, study_id)
    if best is None:
        raise NotFound(f"study {study_id} has no completed trial yet")
    return best


def running_studies_using(session: Session, dataset_name: str) -> list[str]:
    """Names of the running studies whose spec names the dataset."""
    rows = session.execute(
        select(Study.name, Study.spec).where(Study.status == StudyState.RUNNING)
    ).all()
    return [name for name, spec in rows if load_spec(spec).dataset.name == dataset_name]


def stop_study(session: Session, study_id: int) -> StudySummary:
    """No new trials start; running ones finish. A finished study keeps its status."""
    result = session.execute(
        update(Study)
        .where(Study.id == study_id, Study.status == StudyState.RUNNING)
        .values(status=StudyState.STOPPED, finished_at=utcnow(), updated_at=utcnow())
    )
    if result.rowcount == 0 and session.get(Study, study_id) is None:  # type: ignore[attr-defined]
        raise StudyNotFound(study_id)
    if result.rowcount == 1:  # type: ignore[attr-defined]
        study = session.get(Study, study_id, populate_existing=True)
        assert study is not None
        record_status_event(session, study)  # its webhook event, if the spec asks
    return summaries(session, [get_study_row(session, study_id)])[0]
