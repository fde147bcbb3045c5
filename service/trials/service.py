"""Trial queries: Optuna's view of a trial joined with the service's record and curves.

Each function reads through the caller's session and never commits.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.analysis import diagnoses
from service.analysis.schemas import Finding
from service.analysis.schemas import TrialDiagnosis as TrialDiagnosisOut
from service.core.db.engine import database_url
from service.core.db.models import CurvePoint, TrialDiagnosis, TrialRecord
from service.core.errors import InvalidInput, TrialNotFound
from service.core.optuna_compat import trial_id_of
from service.core.optuna_storage import get_storage
from service.studies.pages import TrialRow, trial_page
from service.studies.service import get_study_row
from service.studies.spec import StudySpec, load_spec
from service.studies.submission import refuse
from service.trials.artifacts import model_meta
from service.trials.schemas import TrialDetail, TrialPage, TrialSummary
from service.trials.transfer import init_from_errors


def summarize_trial(
    t: FrozenTrial, study_id: int, record: TrialRecord | None, retried_by: int | None = None
) -> TrialSummary:
    """A trial as the API lists it, from Optuna's `FrozenTrial` (one path with the trials
    page's rows: `_row_summary`)."""
    row = TrialRow(
        trial_id=trial_id_of(t),
        number=t.number,
        state=t.state,
        datetime_start=t.datetime_start,
        datetime_complete=t.datetime_complete,
        params=t.params,
        values=dict(enumerate(t.values)) if t.values is not None else {},
    )
    return _row_summary(row, study_id, record, retried_by)


def _row_summary(
    t: TrialRow, study_id: int, record: TrialRecord | None, retried_by: int | None
) -> TrialSummary:
    """A trial as the API lists it, from a row read by `studies.pages` (or a FrozenTrial's,
    `summarize_trial`)."""
    values = None
    if t.state == TrialState.COMPLETE and t.values:
        values = [t.values[k] for k in sorted(t.values)]
    duration = None
    if t.datetime_start is not None and t.datetime_complete is not None:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    return TrialSummary(
        trial_id=t.trial_id,
        study_id=study_id,
        number=t.number,
        state=t.state.name.lower(),
        params=t.params,
        value=values[0] if values is not None and len(values) == 1 else None,
        values=values,
        duration_seconds=duration,
        error=None if record is None else record.error,
        started_at=t.datetime_start,
        finished_at=t.datetime_complete,
        retry_of=None if record is None else record.retry_of,
        retried_by=retried_by,
        oom_batch_size=None if record is None else record.oom_batch_size,
        resumed_from_epoch=None if record is None else record.resumed_from_epoch,
        device_seconds=None if record is None else record.device_seconds,
    )


def list_trials(
    session: Session, study_id: int, limit: int, offset: int, state: str | None = None
) -> TrialPage:
    """One page of a study's trials in number order, optionally of one state (Optuna's
    name, lower case); raises `StudyNotFound`. Indexed reads of the page's trials only
    (`studies.pages`): the cost does not grow with the study."""
    study = get_study_row(session, study_id)
    wanted = None if state is None else TrialState[state.upper()]
    total, page = trial_page(session, study.optuna_study_id, limit, offset, wanted)
    ids = [t.trial_id for t in page]
    records: dict[int | None, TrialRecord] = {}
    retries: dict[int | None, int] = {}
    if ids:
        # By the unique and retry_of indexes only: SQLite's planner, given a study_id
        # condition too, walks the study's (study_id, state) index instead.
        records = {
            r.optuna_trial_id: r
            for r in session.scalars(
                select(TrialRecord).where(TrialRecord.optuna_trial_id.in_(ids))
            )
        }
        for retry_of, tid in session.execute(
            select(TrialRecord.retry_of, TrialRecord.optuna_trial_id)
            .where(TrialRecord.retry_of.in_(ids), TrialRecord.optuna_trial_id.is_not(None))
            .order_by(TrialRecord.id)
        ):
            if tid is not None:
                retries[retry_of] = tid
    return TrialPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[
            _row_summary(t, study_id, records.get(t.trial_id), retries.get(t.trial_id))
            for t in page
        ],
    )


def get_curves(session: Session, trial_id: int) -> dict[str, list[tuple[int, float]]]:
    """A trial's curves: {metric: [(epoch, value), ...]} in epoch order."""
    rows = session.execute(
        select(CurvePoint.metric, CurvePoint.step, CurvePoint.value)
        .where(CurvePoint.trial_id == trial_id)
        .order_by(CurvePoint.metric, CurvePoint.step)
    ).all()
    curves: dict[str, list[tuple[int, float]]] = {}
    for metric, step, value in rows:
        curves.setdefault(metric, []).append((step, value))
    return curves


def _record(session: Session, trial_id: int) -> TrialRecord:
    record = session.scalar(select(TrialRecord).where(TrialRecord.optuna_trial_id == trial_id))
    if record is None:
        raise TrialNotFound(trial_id)
    return record


def _findings(
    session: Session,
    record: TrialRecord,
    frozen: FrozenTrial | None = None,
    curves: dict[str, list[float]] | None = None,
) -> list[Finding]:
    """The trial's stored findings; a finished trial without them has them computed and
    stored by `diagnoses` in this session, once."""
    assert record.optuna_trial_id is not None
    found = session.scalar(
        select(TrialDiagnosis.findings).where(TrialDiagnosis.trial_id == record.optuna_trial_id)
    )
    if found is None:
        spec = load_spec(get_study_row(session, record.study_id).spec)
        found = diagnoses.findings_for(session, record, spec, frozen, curves)
    return [Finding.model_validate(f) for f in found]


def get_trial(session: Session, trial_id: int) -> TrialDetail:
    """A trial with its params, state, value, curves and findings; raises `TrialNotFound`."""
    record = _record(session, trial_id)
    try:
        frozen = get_storage(database_url(session)).get_trial(trial_id)
    except KeyError as e:
        raise TrialNotFound(trial_id) from e
    retried_by = session.scalar(
        select(TrialRecord.optuna_trial_id).where(TrialRecord.retry_of == trial_id).limit(1)
    )
    summary = summarize_trial(frozen, record.study_id, record, retried_by)
    curves = get_curves(session, trial_id)
    values = {m: [v for _, v in points] for m, points in curves.items()}
    return TrialDetail(
        **summary.model_dump(),
        test_accuracy=record.test_accuracy,
        test_metrics=record.test_metrics or {},
        warnings=record.warnings or [],
        has_model=model_meta(session, trial_id) is not None,
        intermediate_values=dict(frozen.intermediate_values),
        curves=curves,
        diagnosis=_findings(session, record, frozen, values),
    )


def get_diagnosis(session: Session, trial_id: int) -> TrialDiagnosisOut:
    """A trial's findings; raises `TrialNotFound`."""
    return TrialDiagnosisOut(
        trial_id=trial_id, findings=_findings(session, _record(session, trial_id))
    )


def check_init_from(session: Session, spec: StudySpec) -> None:
    """init_from names a trial: only the database knows whether it fits; raises
    `InvalidInput`."""
    init = spec.init_from
    refuse(
        [
            InvalidInput(
                f"init_from.{field}: {reason}",
                field=f"init_from.{field}",
                value=getattr(init, field),
            )
            for field, reason in init_from_errors(session, spec)
        ]
    )
