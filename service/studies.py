"""Study service functions: routes and the CLI call these; they own the transactions."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from service.db.engine import session_scope
from service.db.models import EnqueuedConfig, Study, TrialRecord, utcnow
from service.optuna_storage import get_storage
from service.schemas import (
    BestTrial,
    StudyCreated,
    StudyDetail,
    StudySpec,
    StudySummary,
    TrialCounts,
)


class StudyExists(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a study named {name!r} already exists")


class StudyNotFound(Exception):
    def __init__(self, study_id: int) -> None:
        super().__init__(f"study {study_id} not found")


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


def counts_of(trials: list[FrozenTrial]) -> TrialCounts:
    counts = TrialCounts()
    for t in trials:
        key = t.state.name.lower()
        setattr(counts, key, getattr(counts, key) + 1)
    return counts


def best_of(
    trials: list[FrozenTrial],
    direction: str,
    records: dict[int, TrialRecord],
    fixed: dict[str, Any],
) -> BestTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    done = [t for t in done if math.isfinite(t.value)]  # type: ignore[arg-type]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    best = pick(done, key=lambda t: t.value)  # type: ignore[arg-type,return-value]
    record = records.get(best._trial_id)
    return BestTrial(
        trial_id=best._trial_id,
        number=best.number,
        value=float(best.value),  # type: ignore[arg-type]
        params=best.params,
        config={**fixed, **best.params},
        test_accuracy=None if record is None else record.test_accuracy,
    )


def summarize(url: str, study: Study) -> tuple[StudySummary, BestTrial | None]:
    trials = get_storage(url).get_all_trials(study.optuna_study_id, deepcopy=False)
    direction = str(study.spec["objective"]["direction"])
    best = best_of(trials, direction, trial_records(url, study.id), study.spec.get("fixed", {}))
    summary = StudySummary(
        id=study.id,
        name=study.name,
        status=study.status,
        n_trials=study.n_trials,
        counts=counts_of(trials),
        best_value=None if best is None else best.value,
        direction=direction,
        error=study.error,
        created_at=study.created_at,
        finished_at=study.finished_at,
    )
    return summary, best


def list_studies(url: str, limit: int = 100, offset: int = 0) -> list[StudySummary]:
    with session_scope(url) as session:
        studies = session.scalars(
            select(Study).order_by(Study.id.desc()).limit(limit).offset(offset)
        ).all()
    return [summarize(url, s)[0] for s in studies]


def get_study(url: str, study_id: int) -> StudyDetail:
    study = get_study_row(url, study_id)
    summary, best = summarize(url, study)
    return StudyDetail(**summary.model_dump(), spec=study.spec, best=best)


def get_best(url: str, study_id: int) -> BestTrial | None:
    return summarize(url, get_study_row(url, study_id))[1]


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
    return summarize(url, get_study_row(url, study_id))[0]
