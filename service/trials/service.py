"""Trial queries: Optuna's view of a trial joined with the service's record and curves."""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select

from service.analysis import diagnoses
from service.analysis.schemas import Finding
from service.analysis.schemas import TrialDiagnosis as TrialDiagnosisOut
from service.core.db.engine import session_scope
from service.core.db.models import CurvePoint, TrialRecord
from service.core.errors import TrialNotFound
from service.core.optuna_storage import get_storage
from service.studies.service import get_study_row, trial_records
from service.studies.spec import load_spec
from service.trials.artifacts import model_meta
from service.trials.schemas import TrialDetail, TrialPage, TrialSummary


def summarize_trial(
    t: FrozenTrial, study_id: int, record: TrialRecord | None, retried_by: int | None = None
) -> TrialSummary:
    duration = None
    if t.datetime_start is not None and t.datetime_complete is not None:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    return TrialSummary(
        trial_id=t._trial_id,
        study_id=study_id,
        number=t.number,
        state=t.state.name.lower(),
        params=t.params,
        value=t.value if t.state == TrialState.COMPLETE else None,
        duration_seconds=duration,
        error=None if record is None else record.error,
        started_at=t.datetime_start,
        finished_at=t.datetime_complete,
        retry_of=None if record is None else record.retry_of,
        retried_by=retried_by,
        oom_batch_size=None if record is None else record.oom_batch_size,
    )


def list_trials(
    url: str, study_id: int, limit: int, offset: int, state: str | None = None
) -> TrialPage:
    study = get_study_row(url, study_id)
    trials = get_storage(url).get_all_trials(study.optuna_study_id, deepcopy=False)
    if state is not None:
        trials = [t for t in trials if t.state.name.lower() == state]
    trials = sorted(trials, key=lambda t: t.number)
    records = trial_records(url, study_id)
    retries = {r.retry_of: tid for tid, r in records.items() if r.retry_of is not None}
    page = trials[offset : offset + limit]
    return TrialPage(
        total=len(trials),
        limit=limit,
        offset=offset,
        items=[
            summarize_trial(t, study_id, records.get(t._trial_id), retries.get(t._trial_id))
            for t in page
        ],
    )


def get_curves(url: str, trial_id: int) -> dict[str, list[tuple[int, float]]]:
    with session_scope(url) as session:
        rows = session.execute(
            select(CurvePoint.metric, CurvePoint.step, CurvePoint.value)
            .where(CurvePoint.trial_id == trial_id)
            .order_by(CurvePoint.metric, CurvePoint.step)
        ).all()
    curves: dict[str, list[tuple[int, float]]] = {}
    for metric, step, value in rows:
        curves.setdefault(metric, []).append((step, value))
    return curves


def get_trial(url: str, trial_id: int) -> TrialDetail:
    with session_scope(url) as session:
        record = session.scalar(select(TrialRecord).where(TrialRecord.optuna_trial_id == trial_id))
    if record is None:
        raise TrialNotFound(trial_id)
    try:
        frozen = get_storage(url).get_trial(trial_id)
    except KeyError as e:
        raise TrialNotFound(trial_id) from e
    with session_scope(url) as session:
        retried_by = session.scalar(
            select(TrialRecord.optuna_trial_id).where(TrialRecord.retry_of == trial_id).limit(1)
        )
    summary = summarize_trial(frozen, record.study_id, record, retried_by)
    curves = get_curves(url, trial_id)
    values = {m: [v for _, v in points] for m, points in curves.items()}
    spec = load_spec(get_study_row(url, record.study_id).spec)
    return TrialDetail(
        **summary.model_dump(),
        test_accuracy=record.test_accuracy,
        warnings=record.warnings or [],
        has_model=model_meta(url, trial_id) is not None,
        intermediate_values=dict(frozen.intermediate_values),
        curves=curves,
        diagnosis=[
            Finding.model_validate(f)
            for f in diagnoses.findings_for(url, record, spec, frozen, values)
        ],
    )


def get_diagnosis(url: str, trial_id: int) -> TrialDiagnosisOut:
    with session_scope(url) as session:
        record = session.scalar(select(TrialRecord).where(TrialRecord.optuna_trial_id == trial_id))
    if record is None:
        raise TrialNotFound(trial_id)
    spec = load_spec(get_study_row(url, record.study_id).spec)
    findings = diagnoses.findings_for(url, record, spec)
    return TrialDiagnosisOut(
        trial_id=trial_id, findings=[Finding.model_validate(f) for f in findings]
    )
