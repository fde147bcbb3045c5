"""Trial diagnoses: computed with trainer.diagnosis when a trial ends, stored, and served.

The worker records a trial's findings right after finishing it. A trial that ended
without them (its worker was killed, or it finished before this feature existed) gets
them computed on first read, and stored then.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from optuna.trial import FrozenTrial
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from service.analysis.remedies import RemedyContext, with_remedies
from service.core.db.engine import database_url, session_scope
from service.core.db.models import CurvePoint, Dataset, Study, TrialDiagnosis, TrialRecord
from service.core.optuna_storage import get_storage
from service.core.states import TrialState
from service.datasets.spec import DatasetSpec
from service.studies.spec import StudySpec, load_spec
from trainer.curve_stats import early_stop, metric_mode
from trainer.data import DATASET_NAMES, load_dataset
from trainer.diagnosis import TrialRun, diagnose
from trainer.params import PARAMS

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Optuna user attribute of a trial the worker stopped because of an early verdict.
PRUNED_BY_DIAGNOSIS = "pruned_by_diagnosis"
Findings = list[dict[str, Any]]


@dataclass(frozen=True)
class SplitFacts:
    """What diagnosis needs to know of a study's data: its classes (chance level: loss
    ln K, error 1 - 1/K) and validation rows (the noise of the validation error); None
    where unknown."""

    n_classes: int | None = None
    n_val: int | None = None
    task: str = "classification"  # regression: chance loss 1, errors 1 - R² (trainer)


def split_facts(session: Session, dataset: DatasetSpec) -> SplitFacts:
    """Classes and validation rows of a study's dataset: a built-in one is loaded (once per
    process and spec), an uploaded one is read from its `hpo_datasets` row."""
    if dataset.name in DATASET_NAMES:
        return _builtin_facts(dataset.model_dump_json())
    row = session.execute(
        select(Dataset.n_rows, Dataset.n_classes, Dataset.task).where(Dataset.name == dataset.name)
    ).first()
    if row is None:
        return SplitFacts(task=dataset.task or "classification")
    # train_test_split's sizes: the test split first, then validation out of the rest.
    rest = row.n_rows - math.ceil(dataset.test_fraction * row.n_rows)
    val_of_rest = dataset.val_fraction / (1.0 - dataset.test_fraction)
    return SplitFacts(
        n_classes=row.n_classes,
        n_val=math.ceil(val_of_rest * rest),
        task=dataset.task or row.task,
    )


@lru_cache(maxsize=32)
def _builtin_facts(dataset_json: str) -> SplitFacts:
    ds = DatasetSpec.model_validate_json(dataset_json)
    split = ds.model_dump(
        include={"val_fraction", "test_fraction", "seed", "n_samples", "noise", "task"}
    )
    try:
        data = load_dataset(ds.name, **split)
    except Exception:  # e.g. an image dataset whose files live on the workers only
        return SplitFacts(task=ds.builtin_task or "classification")
    return SplitFacts(n_classes=data.n_classes, n_val=int(data.y_val.shape[0]), task=data.task)


def kept_epoch(
    config: Mapping[str, object], curves: Mapping[str, list[float]], monitor: str
) -> int | None:
    """The epoch whose weights a trial kept: with early stopping on, the trainer restores
    its best epoch by `monitor` (replayed here on the recorded curve); None otherwise."""
    patience = config.get("early_stopping_patience", PARAMS["early_stopping_patience"].default)
    values = curves.get(monitor)
    if not isinstance(patience, int | float) or patience <= 0 or not values:
        return None
    min_delta = config.get("early_stopping_min_delta", 0.0)
    delta = float(min_delta) if isinstance(min_delta, int | float) else 0.0
    return early_stop(values, int(patience), metric_mode(monitor), delta)[1]


def curve_values(session: Session, trial_id: int) -> dict[str, list[float]]:
    """Per-epoch values of each metric, in epoch order."""
    rows = session.execute(
        select(CurvePoint.metric, CurvePoint.value)
        .where(CurvePoint.trial_id == trial_id)
        .order_by(CurvePoint.metric, CurvePoint.step)
    ).all()
    curves: dict[str, list[float]] = {}
    for metric, value in rows:
        curves.setdefault(metric, []).append(value)
    return curves


def diagnose_trial(
    spec: StudySpec,
    record: TrialRecord,
    frozen: FrozenTrial,
    curves: dict[str, list[float]],
    facts: SplitFacts | None = None,
) -> Findings:
    """Findings of one finished trial, with remedies rendered against its study's spec;
    a trial stopped by an early verdict says so in that finding's evidence.

    `frozen`: the trial as Optuna stores it; `curves`: per-epoch values by metric name;
    `facts`: the dataset's classes and validation rows (`split_facts`).
    """
    facts = SplitFacts() if facts is None else facts
    config = {**spec.fixed, **frozen.params}
    monitor = str(spec.objective.metric)
    run = TrialRun(
        curves=curves,
        state=record.state,
        error=record.error,
        n_classes=facts.n_classes,
        max_epochs=spec.objective.max_epochs,
        n_val=facts.n_val,
        monitor=monitor,
        kept_epoch=kept_epoch(config, curves, monitor),
        task=facts.task,
    )
    ctx = RemedyContext(config=config, spec=spec)
    findings = with_remedies(diagnose(run), ctx)
    reason = frozen.user_attrs.get(PRUNED_BY_DIAGNOSIS)
    if reason is not None:
        kind = str(reason).split(" ", 1)[0]
        for f in findings:
            if f["kind"] == kind:
                f["evidence"]["stopped_early"] = str(reason)
    return findings


def _store(session: Session, computed: Mapping[TrialRecord, Findings]) -> None:
    """Store computed findings, each in a savepoint of the caller's transaction: a trial
    diagnosed concurrently (by another reader or the worker: the same result), or a write
    that fails, costs only its own row, and a read never fails because the write did.

    Callers store last, after their reads of Optuna. On SQLite a read request has begun no
    transaction before this (pysqlite begins one at the first write), so the savepoint is
    the outermost and its release commits at once: the database's write lock, which the
    workers' Optuna writes wait for, is held only for the insert. On PostgreSQL the rows
    commit with the caller's transaction.
    """
    for record, findings in computed.items():
        assert record.optuna_trial_id is not None
        row = TrialDiagnosis(
            trial_id=record.optuna_trial_id, study_id=record.study_id, findings=findings
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            pass  # stored concurrently
        except SQLAlchemyError as e:
            log.warning("could not store the diagnosis of trial %s: %s", row.trial_id, e)


def record_diagnosis(url: str, trial_id: int) -> None:
    """Called by the worker after a trial ended; never raises (reads compute it again)."""
    try:
        with session_scope(url) as session:
            record = session.scalar(
                select(TrialRecord).where(TrialRecord.optuna_trial_id == trial_id)
            )
            study = None if record is None else session.get(Study, record.study_id)
            if record is None or study is None or record.state not in FINISHED:
                return
            findings_for(session, record, load_spec(study.spec))
    except Exception:
        log.exception("could not diagnose trial %s; it is diagnosed when read", trial_id)


def stored(session: Session, trial_ids: list[int]) -> dict[int, Findings]:
    """The stored findings of those trials that have them, by Optuna trial id."""
    if not trial_ids:
        return {}
    rows = session.execute(
        select(TrialDiagnosis.trial_id, TrialDiagnosis.findings).where(
            TrialDiagnosis.trial_id.in_(trial_ids)
        )
    ).all()
    return {tid: list(f) for tid, f in rows}


def _compute(
    session: Session,
    record: TrialRecord,
    spec: StudySpec,
    frozen: FrozenTrial | None,
    curves: dict[str, list[float]] | None,
) -> Findings:
    """Findings of a finished trial not diagnosed yet (none if Optuna lost the trial)."""
    assert record.optuna_trial_id is not None
    trial_id = record.optuna_trial_id
    if frozen is None:
        try:
            frozen = get_storage(database_url(session)).get_trial(trial_id)
        except KeyError:  # our record outlived Optuna's trial: nothing to diagnose
            return []
    curves = curve_values(session, trial_id) if curves is None else curves
    return diagnose_trial(spec, record, frozen, curves, split_facts(session, spec.dataset))


def findings_for(
    session: Session,
    record: TrialRecord,
    spec: StudySpec,
    frozen: FrozenTrial | None = None,
    curves: dict[str, list[float]] | None = None,
) -> Findings:
    """The stored findings, or (for a finished trial without them) computed now and stored
    in the caller's transaction, left for the caller to commit. A trial still running has
    none yet. `frozen` and `curves` spare the reads when the caller has them."""
    assert record.optuna_trial_id is not None
    found = stored(session, [record.optuna_trial_id])
    if record.optuna_trial_id in found:
        return found[record.optuna_trial_id]
    if record.state not in FINISHED:
        return []
    findings = _compute(session, record, spec, frozen, curves)
    _store(session, {record: findings})
    return findings


def study_findings(
    session: Session, study: Study, trials: Mapping[int, FrozenTrial] | None = None
) -> dict[int, Findings]:
    """Findings of every finished trial of a study, by Optuna trial id; those not stored
    yet are computed and stored in the caller's transaction. `trials`: Optuna's trials of
    the study by trial id, if the caller has them."""
    records = session.scalars(
        select(TrialRecord).where(
            TrialRecord.study_id == study.id,
            TrialRecord.optuna_trial_id.is_not(None),
            TrialRecord.state.in_(FINISHED),
        )
    ).all()
    ids = [r.optuna_trial_id for r in records if r.optuna_trial_id is not None]
    out = stored(session, ids)
    missing = [r for r in records if r.optuna_trial_id is not None and r.optuna_trial_id not in out]
    if not missing:
        return out
    spec = load_spec(study.spec)
    computed = {}
    for r in missing:
        assert r.optuna_trial_id is not None
        frozen = None if trials is None else trials.get(r.optuna_trial_id)
        computed[r] = out[r.optuna_trial_id] = _compute(session, r, spec, frozen, None)
    _store(session, computed)
    return out
