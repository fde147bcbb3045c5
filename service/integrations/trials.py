"""The worker's calls when a trial has ended: `trial_told` once Optuna has its final state
(before the record that may end the study, so a study's last `best_improved` event comes
before its `completed`), and `trial_ended` in its clean-up (after its diagnosis is stored,
which the MLflow run carries as tags). Neither ever raises: nothing here may fail a trial."""

from __future__ import annotations

import logging
import math
from functools import partial

from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import Study
from service.core.db.retry import retry_db
from service.core.optuna_storage import get_storage
from service.integrations.config import IntegrationSettings
from service.integrations.mlflow_export import record_export
from service.integrations.notify import notify_of, record_trial_result

log = logging.getLogger("hpo.outbox")


def _study_id(url: str, name: str) -> int | None:
    with session_scope(url) as session:
        return session.scalar(select(Study.id).where(Study.name == name))


def _record_best(url: str, study_name: str, trial_id: int, maximize: bool) -> None:
    with session_scope(url) as session:
        found = session.execute(
            select(Study.id, Study.spec).where(Study.name == study_name)
        ).first()
    if found is None:
        return
    study_id, spec = found
    notify = notify_of(spec)
    if notify is None or "best_improved" not in notify.events:
        return  # one read: no lock, no read of the trial
    frozen = get_storage(url).get_trial(trial_id)
    values = frozen.values  # one value: a multi-objective study has no single best
    if frozen.state.name != "COMPLETE" or values is None or len(values) != 1:
        return
    value = values[0]
    if math.isfinite(value):
        record_trial_result(
            url,
            study_id,
            trial_id=trial_id,
            number=frozen.number,
            value=value,
            params=dict(frozen.params),
            maximize=maximize,
        )


def trial_told(url: str, study_name: str, trial_id: int, *, maximize: bool) -> None:
    """Record the study's `best_improved` event if the trial `trial_id` (Optuna's id)
    completed with a better value than every earlier trial and the spec asks for it."""
    try:
        retry_db(partial(_record_best, url, study_name, trial_id, maximize), "best_improved")
    except Exception:
        log.exception("trial %d: could not record its best_improved event", trial_id)


def _record_export(url: str, study_name: str, trial_id: int) -> None:
    study_id = _study_id(url, study_name)
    if study_id is not None:
        record_export(url, study_id, trial_id)


def trial_ended(url: str, study_name: str, trial_id: int) -> None:
    """Queue the ended trial's MLflow export when `HPO_MLFLOW_TRACKING_URI` is set."""
    if IntegrationSettings().mlflow_tracking_uri is None:
        return
    try:
        retry_db(partial(_record_export, url, study_name, trial_id), "mlflow export")
    except Exception:
        log.exception("trial %d: could not queue its MLflow export", trial_id)
