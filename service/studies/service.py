"""Study service functions: routes and the CLI call these; they own the transactions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import optuna
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from service.core.db.engine import session_scope
from service.core.db.models import EnqueuedConfig, Study, TrialRecord, utcnow
from service.core.errors import StudyExists, StudyNotFound
from service.core.optuna_storage import get_storage
from service.studies.queries import best_trial_id, best_values, trial_counts
from service.studies.schemas import BestTrial, StudyCreated, StudyDetail, StudySummary
from service.studies.spec import StudySpec

ACTIVE = "running"


def optuna_direction(spec: StudySpec) -> optuna.study.StudyDirection:
    if spec.objective.direction == "maximize":
        return optuna.study.StudyDirection.MAXIMIZE
    return optuna.study.StudyDirection.MINIMIZE


def create_study(url: str, spec: StudySpec, owner_token_id: int | None = None) -> StudyCreated:
    with session_scope(url) as session:
        if session.scalar(select(Study.id).where(Study.name == spec.name)) is not None:
            raise StudyExists(spec.name)
    storage = get_storage(url)
    # Optuna's study first, committed on its own connection: on SQLite a transaction of ours
    # holding the write lock would block Optuna's insert until the busy timeout.
    try:
        optuna_id = storage.create_new_study([optuna_direction(spec)], f"hpo:{spec.name}")
    except optuna.exceptions.DuplicatedStudyError as e:
        raise StudyExists(spec.name) from e
    now = utcnow()
    deadline = (
        None
        if spec.budget.timeout_seconds is None
        else now + timedelta(seconds=spec.budget.timeout_seconds)
    )
    try:
        with session_scope(url) as session:
            study = Study(
                name=spec.name,
                spec=spec.model_dump(mode="json"),
                status=ACTIVE,
                optuna_study_id=optuna_id,
                n_trials=spec.budget.n_trials,
                slots_used=0,
                n_claims=0,
                n_failed=0,
                priority=spec.priority,
                n_running=0,
                max_parallel_trials=spec.budget.max_parallel_trials,
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
            return StudyCreated(id=study.id, name=study.name, status=study.status)
    except IntegrityError as e:
        storage.delete_study(optuna_id)
        raise StudyExists(spec.name) from e
    except BaseException:
        storage.delete_study(optuna_id)
        raise


def get_study_row(url: str, study_id: int) -> Study:
    with session_scope(url) as session:
        study = session.get(Study, study_id)
        if study is None:
            raise StudyNotFound(study_id)
        return study


def trial_records(url: str, study_id: int) -> dict[int, TrialRecord]:
    """Service-side records of a study's trials, by Optuna trial id."""
    with session_scope(url) as session:
        rows = session.scalars(
            select(TrialRecord).where(
                TrialRecord.study_id == study_id, TrialRecord.optuna_trial_id.is_not(None)
            )
        ).all()
        return {r.optuna_trial_id: r for r in rows if r.optuna_trial_id is not None}


def _direction(study: Study) -> str:
    return str(study.spec["objective"]["direction"])


def best_trial(url: str, study: Study) -> BestTrial | None:
    """The complete trial with the best finite value (ties: the earliest)."""
    trial_id = best_trial_id(url, study.optuna_study_id, _direction(study))
    if trial_id is None:
        return None
    best = get_storage(url).get_trial(trial_id)
    with session_scope(url) as session:
        test_accuracy = session.scalar(
            select(TrialRecord.test_accuracy).where(TrialRecord.optuna_trial_id == trial_id)
        )
    return BestTrial(
        trial_id=trial_id,
        number=best.number,
        value=float(best.value),  # type: ignore[arg-type]
        params=best.params,
        config={**study.spec.get("fixed", {}), **best.params},
        test_accuracy=test_accuracy,
    )


def summaries(url: str, studies: Sequence[Study]) -> list[StudySummary]:
    """Summaries from two aggregate queries (counts by state, best value), however many
    trials the studies hold."""
    counts = trial_counts(url, [s.optuna_study_id for s in studies])
    best = best_values(url, {s.optuna_study_id: _direction(s) for s in studies})
    return [
        StudySummary(
            id=s.id,
            name=s.name,
            status=s.status,
            n_trials=s.n_trials,
            counts=counts[s.optuna_study_id],
            best_value=best.get(s.optuna_study_id),
            direction=_direction(s),
            error=s.error,
            created_at=s.created_at,
            finished_at=s.finished_at,
        )
        for s in studies
    ]


def list_studies(url: str, limit: int = 100, offset: int = 0) -> list[StudySummary]:
    with session_scope(url) as session:
        studies = session.scalars(
            select(Study).order_by(Study.id.desc()).limit(limit).offset(offset)
        ).all()
    return summaries(url, studies)


def get_study(url: str, study_id: int) -> StudyDetail:
    study = get_study_row(url, study_id)
    summary = summaries(url, [study])[0]
    return StudyDetail(**summary.model_dump(), spec=study.spec, best=best_trial(url, study))


def get_best(url: str, study_id: int) -> BestTrial | None:
    return best_trial(url, get_study_row(url, study_id))


def stop_study(url: str, study_id: int) -> StudySummary:
    """No new trials start; running ones finish. A finished study keeps its status."""
    with session_scope(url) as session:
        result = session.execute(
            update(Study)
            .where(Study.id == study_id, Study.status == ACTIVE)
            .values(status="stopped", finished_at=utcnow(), updated_at=utcnow())
        )
        if result.rowcount == 0 and session.get(Study, study_id) is None:  # type: ignore[attr-defined]
            raise StudyNotFound(study_id)
    return summaries(url, [get_study_row(url, study_id)])[0]
