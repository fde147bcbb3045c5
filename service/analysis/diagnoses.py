"""Trial diagnoses: computed with trainer.diagnosis when a trial ends, stored, and served.

The worker records a trial's findings right after finishing it. A trial that ended
without them (its worker was killed, or it finished before this feature existed) gets
them computed on first read, and stored then.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from optuna.trial import FrozenTrial
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.analysis.remedies import RemedyContext, with_remedies
from service.core.db.engine import session_scope
from service.core.db.models import CurvePoint, Study, TrialDiagnosis, TrialRecord
from service.core.optuna_storage import get_storage
from service.core.states import TrialState
from service.datasets.spec import DatasetSpec
from service.studies.spec import StudySpec, load_spec
from trainer.data import load_dataset
from trainer.diagnosis import TrialRun, diagnose

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Optuna user attribute of a trial the worker stopped because of an early verdict.
PRUNED_BY_DIAGNOSIS = "pruned_by_diagnosis"
Findings = list[dict[str, Any]]


def n_classes(dataset: DatasetSpec) -> int | None:
    """Classes of a study's dataset (for the chance-level loss ln K); None if unknown."""
    return _n_classes(dataset.model_dump_json())


@lru_cache(maxsize=32)
def _n_classes(dataset_json: str) -> int | None:
    ds = DatasetSpec.model_validate_json(dataset_json)
    split = ds.model_dump(include={"val_fraction", "test_fraction", "seed", "n_samples", "noise"})
    try:
        return load_dataset(ds.name, **split).n_classes
    except Exception:  # an uploaded or unknown dataset: diagnose without chance level
        return None


def curve_values(url: str, trial_id: int) -> dict[str, list[float]]:
    """Per-epoch values of each metric, in epoch order."""
    with session_scope(url) as session:
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
) -> Findings:
    """Findings of one finished trial, with remedies rendered against its study's spec;
    a trial stopped by an early verdict says so in that finding's evidence.

    `frozen`: the trial as Optuna stores it; `curves`: per-epoch values by metric name.
    """
    run = TrialRun(
        curves=curves,
        state=record.state,
        error=record.error,
        n_classes=n_classes(spec.dataset),
        max_epochs=spec.objective.max_epochs,
    )
    ctx = RemedyContext(config={**spec.fixed, **frozen.params}, spec=spec)
    findings = with_remedies(diagnose(run), ctx)
    reason = frozen.user_attrs.get(PRUNED_BY_DIAGNOSIS)
    if reason is not None:
        kind = str(reason).split(" ", 1)[0]
        for f in findings:
            if f["kind"] == kind:
                f["evidence"]["stopped_early"] = str(reason)
    return findings


def _store(url: str, trial_id: int, study_id: int, findings: Findings) -> None:
    try:
        with session_scope(url) as session:
            session.add(TrialDiagnosis(trial_id=trial_id, study_id=study_id, findings=findings))
    except IntegrityError:
        pass  # computed concurrently by another reader or the worker: same result


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
        findings_for(url, record, load_spec(study.spec))
    except Exception:
        log.exception("could not diagnose trial %s; it is diagnosed when read", trial_id)


def stored(url: str, trial_ids: list[int]) -> dict[int, Findings]:
    """The stored findings of those trials that have them, by Optuna trial id."""
    if not trial_ids:
        return {}
    with session_scope(url) as session:
        rows = session.execute(
            select(TrialDiagnosis.trial_id, TrialDiagnosis.findings).where(
                TrialDiagnosis.trial_id.in_(trial_ids)
            )
        ).all()
    return {tid: list(f) for tid, f in rows}


def findings_for(
    url: str,
    record: TrialRecord,
    spec: StudySpec,
    frozen: FrozenTrial | None = None,
    curves: dict[str, list[float]] | None = None,
) -> Findings:
    """The stored findings, or (for a finished trial without them) computed and stored now.
    A trial still running has none yet."""
    assert record.optuna_trial_id is not None
    trial_id = record.optuna_trial_id
    found = stored(url, [trial_id])
    if trial_id in found:
        return found[trial_id]
    if record.state not in FINISHED:
        return []
    if frozen is None:
        try:
            frozen = get_storage(url).get_trial(trial_id)
        except KeyError:  # our record outlived Optuna's trial: nothing to diagnose
            frozen = None
    findings: Findings = []
    if frozen is not None:
        curves = curve_values(url, trial_id) if curves is None else curves
        findings = diagnose_trial(spec, record, frozen, curves)
    try:
        _store(url, trial_id, record.study_id, findings)
    except SQLAlchemyError as e:  # a read must not fail because the write did
        log.warning("could not store the diagnosis of trial %s: %s", trial_id, e)
    return findings


def study_findings(url: str, study: Study) -> dict[int, Findings]:
    """Findings of every finished trial of a study, by Optuna trial id."""
    with session_scope(url) as session:
        records = session.scalars(
            select(TrialRecord).where(
                TrialRecord.study_id == study.id,
                TrialRecord.optuna_trial_id.is_not(None),
                TrialRecord.state.in_(FINISHED),
            )
        ).all()
    ids = [r.optuna_trial_id for r in records if r.optuna_trial_id is not None]
    out = stored(url, ids)
    missing = [r for r in records if r.optuna_trial_id is not None and r.optuna_trial_id not in out]
    if missing:
        spec = load_spec(study.spec)
        for r in missing:
            assert r.optuna_trial_id is not None
            out[r.optuna_trial_id] = findings_for(url, r, spec)
    return out
