"""Finished trials as MLflow runs (the `[mlflow]` extra), with `HPO_MLFLOW_TRACKING_URI` set.

The worker records each ended trial in `hpo_mlflow_exports` (`record_export`, one insert
in its clean-up); the dispatcher thread (`dispatch`) exports due rows later with
`export_due`. So a slow or unreachable tracking server never blocks training, a failure to
log never fails a trial (it is retried with back-off, then given up and kept on the row
with its error), and a worker that dies before exporting leaves the row to the next worker.

One run per trial, in the experiment named after the study:
- params: the trial's parameters (Optuna's) and the spec's `fixed` ones;
- metrics: every per-epoch curve (`hpo_curve_points`) with the epoch as its step, and the
  final `objective` value and `test_accuracy` (when there is one);
- tags: `hpo.study_id`, `hpo.trial_id`, `hpo.trial_number`, `hpo.state` (complete, pruned,
  fail), `hpo.error`, and `hpo.diagnosis.<kind>` = severity for each finding of the
  trial's diagnosis (plus `hpo.diagnosis` listing the kinds);
- status FINISHED (complete), KILLED (pruned) or FAILED, start and end times the trial's.
A retried export first deletes the run a failed attempt may have left (found by its
`hpo.trial_id` tag), so each trial has one run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.core.db.engine import session_scope
from service.core.db.models import CurvePoint, Study, TrialDiagnosis, TrialRecord
from service.core.db.outbox import MlflowExport
from service.core.optuna_storage import get_storage
from service.integrations.config import IntegrationSettings
from service.integrations.outbox import claim_due, settle

STATUS = {"complete": "FINISHED", "pruned": "KILLED", "fail": "FAILED"}
T = TypeVar("T")


def record_export(url: str, study_id: int, trial_id: int) -> None:
    """Queue the ended trial `trial_id` (Optuna's id) for export; a repeat is ignored."""
    try:
        with session_scope(url) as session:
            session.add(MlflowExport(study_id=study_id, trial_id=trial_id))
    except IntegrityError:
        pass  # queued by an earlier attempt


def _millis(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _metric_name(name: str) -> str:
    # MLflow accepts letters, digits, _ - . space / in names.
    return re.sub(r"[^\w\-. /]", "_", name)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _facts(url: str, trial_id: int) -> dict[str, Any]:
    """What the run is made of, read from the database."""
    with session_scope(url) as session:
        record = session.scalars(
            select(TrialRecord).where(TrialRecord.optuna_trial_id == trial_id)
        ).one()
        study = session.get(Study, record.study_id)
        assert study is not None
        curves = session.execute(
            select(CurvePoint.metric, CurvePoint.step, CurvePoint.value)
            .where(CurvePoint.trial_id == trial_id)
            .order_by(CurvePoint.metric, CurvePoint.step)
        ).all()
        findings = session.scalar(
            select(TrialDiagnosis.findings).where(TrialDiagnosis.trial_id == trial_id)
        )
        facts = {
            "study_id": study.id,
            "study": study.name,
            "fixed": dict(study.spec.get("fixed") or {}),
            "number": record.number,
            "state": record.state,
            "error": record.error,
            "test_accuracy": record.test_accuracy,
            "started": record.started_at,
            "finished": record.finished_at,
            "curves": [tuple(row) for row in curves],
            "findings": list(findings or []),
        }
    frozen = get_storage(url).get_trial(trial_id)
    facts["params"] = dict(frozen.params)
    facts["value"] = frozen.value
    return facts


def _experiment(client: Any, name: str, study_id: int) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, tags={"hpo.study_id": str(study_id)}))
    except MlflowException:  # another worker created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def export_trial(tracking_uri: str, url: str, trial_id: int, *, retry: bool = False) -> str:
    """Log the ended trial `trial_id` as one MLflow run; its run id. `retry`: delete a run a
    failed earlier attempt left first. Raises what MLflow raises (ImportError without the
    `[mlflow]` extra)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    facts = _facts(url, trial_id)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment(client, facts["study"], facts["study_id"])
    if retry:
        stale = client.search_runs(
            [experiment_id], filter_string=f"tags.`hpo.trial_id` = '{trial_id}'"
        )
        for run in stale:
            client.delete_run(run.info.run_id)
    kinds = [str(f["kind"]) for f in facts["findings"]]
    tags = {
        "hpo.study_id": str(facts["study_id"]),
        "hpo.trial_id": str(trial_id),
        "hpo.trial_number": str(facts["number"]),
        "hpo.state": facts["state"],
        "hpo.diagnosis": ",".join(kinds),
        **{f"hpo.diagnosis.{f['kind']}": str(f.get("severity", "")) for f in facts["findings"]},
    }
    if facts["error"]:
        tags["hpo.error"] = facts["error"][:5000]
    start = _millis(facts["started"])
    run = client.create_run(
        experiment_id, start_time=start, tags=tags, run_name=f"trial {facts['number']}"
    )
    run_id = str(run.info.run_id)
    params = {**{k: v for k, v in facts["fixed"].items()}, **facts["params"]}
    param_list = [Param(str(k), str(v)) for k, v in params.items()]
    stamp = _millis(facts["finished"]) or start or 0
    metrics = [
        Metric(_metric_name(name), float(value), stamp, int(step))
        for name, step, value in facts["curves"]
        if math.isfinite(value)
    ]
    finals = {"objective": facts["value"], "test_accuracy": facts["test_accuracy"]}
    last_step = max((int(step) for _, step, _ in facts["curves"]), default=0)
    metrics += [
        Metric(name, float(value), stamp, last_step)
        for name, value in finals.items()
        if value is not None and math.isfinite(value)
    ]
    for params_part in _chunks(param_list, 100):
        client.log_batch(run_id, params=list(params_part))
    for metrics_part in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=list(metrics_part))
    client.set_terminated(run_id, status=STATUS.get(facts["state"], "FAILED"), end_time=stamp)
    return run_id


def export_due(url: str, settings: IntegrationSettings) -> int:
    """Export every due trial once; how many were exported now. A failure is recorded on
    its row (retried with back-off, then `failed`), never raised."""
    uri = settings.mlflow_tracking_uri
    if uri is None:
        return 0
    exported = 0
    for trial_id in claim_due(url, MlflowExport):
        with session_scope(url) as session:
            row = session.get(MlflowExport, trial_id)
            retry = row is not None and row.attempts > 1
        error: str | None = None
        run_id: str | None = None
        try:
            run_id = export_trial(uri, url, trial_id, retry=retry)
        except Exception as e:  # whatever MLflow or the store raises: recorded, retried
            error = f"{type(e).__name__}: {e}"
        settle(
            url,
            MlflowExport,
            trial_id,
            error=error,
            backoff_s=settings.webhook_backoff_seconds,
            max_backoff_s=settings.webhook_max_backoff_seconds,
            max_attempts=settings.webhook_max_attempts,
            run_id=run_id,
        )
        exported += error is None
    return exported
