"""MLflow export (issue 16 §7): with HPO_MLFLOW_TRACKING_URI set, a real worker's ended
trials become MLflow runs in a local file store (read back with MlflowClient: params,
per-epoch metrics with their steps, final metrics, state and diagnosis tags); an
unwritable tracking URI fails no trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import CurvePoint, Study, TrialDiagnosis, TrialRecord
from service.core.db.outbox import MlflowExport
from service.core.optuna_storage import get_storage
from tests.conftest import tiny_spec, unique
from tests.test_webhooks import run_worker_with_env, submit

mlflow = pytest.importorskip("mlflow")  # the [mlflow] extra (in dev, so CI runs this)

pytestmark = pytest.mark.slow  # real worker processes

# MLflow 3 keeps the file store only on request; a real deployment uses a server or
# sqlite:///mlflow.db (the file store reads back without a server, which suits a test).
FILE_STORE = {"MLFLOW_ALLOW_FILE_STORE": "true", "HPO_OUTBOX_POLL_SECONDS": "0.05"}


def exports(url: str, study_id: int) -> list[MlflowExport]:
    with session_scope(url) as session:
        return list(session.scalars(select(MlflowExport).where(MlflowExport.study_id == study_id)))


def curves(url: str, trial_id: int) -> dict[str, list[tuple[int, float]]]:
    with session_scope(url) as session:
        points = session.execute(
            select(CurvePoint.metric, CurvePoint.step, CurvePoint.value).where(
                CurvePoint.trial_id == trial_id
            )
        ).all()
    out: dict[str, list[tuple[int, float]]] = {}
    for metric, step, value in points:
        out.setdefault(metric, []).append((step, value))
    return {k: sorted(v) for k, v in out.items()}


def test_a_real_workers_trials_become_mlflow_runs(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"file://{tmp_path / 'mlruns'}"
    name = unique("exported")
    raw: dict[str, Any] = tiny_spec(name, n_trials=2)
    study_id = submit(database_url, raw)
    run_worker_with_env(database_url, [name], {**FILE_STORE, "HPO_MLFLOW_TRACKING_URI": store})

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None and experiment.tags["hpo.study_id"] == str(study_id)
    runs = {r.data.tags["hpo.trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    storage = get_storage(database_url)
    trials = storage.get_all_trials(storage.get_study_id_from_name(f"hpo:{name}"))
    assert sorted(runs) == sorted(str(t._trial_id) for t in trials)
    rows = {e.trial_id: e for e in exports(database_url, study_id)}
    for trial in trials:
        trial_id = trial._trial_id
        run = runs[str(trial_id)]
        assert rows[trial_id].state == "delivered" and rows[trial_id].run_id == run.info.run_id
        assert run.info.status == "FINISHED" and run.info.run_name == f"trial {trial.number}"
        tags = run.data.tags
        assert (tags["hpo.state"], tags["hpo.trial_number"]) == ("complete", str(trial.number))
        # params: the trial's own and the spec's fixed ones
        expected = {k: str(v) for k, v in {**raw["fixed"], **trial.params}.items()}
        assert run.data.params == expected
        # every curve with its epochs as steps
        stored = curves(database_url, trial_id)
        assert stored and "val_accuracy" in stored
        for metric, points in stored.items():
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted((m.step, m.value) for m in history) == points, metric
        # final metrics
        assert run.data.metrics["objective"] == trial.value
        with session_scope(database_url) as session:
            record = session.scalars(
                select(TrialRecord).where(TrialRecord.optuna_trial_id == trial_id)
            ).one()
            findings = session.scalar(
                select(TrialDiagnosis.findings).where(TrialDiagnosis.trial_id == trial_id)
            )
        if record.test_accuracy is not None:
            assert run.data.metrics["test_accuracy"] == record.test_accuracy
        # diagnosis kinds as tags
        kinds = [f["kind"] for f in findings or []]
        assert tags["hpo.diagnosis"] == ",".join(kinds)
        for kind in kinds:
            assert f"hpo.diagnosis.{kind}" in tags


def test_an_unwritable_tracking_uri_fails_no_trial(database_url: str) -> None:
    """Under /proc nothing can be created: every export attempt fails, the trials complete
    and the study completes; the row keeps the error and is given up."""
    name = unique("unexported")
    study_id = submit(database_url, tiny_spec(name, n_trials=2))
    env = {
        **FILE_STORE,
        "HPO_MLFLOW_TRACKING_URI": "file:///proc/hpo-cannot-write-here",
        "HPO_WEBHOOK_BACKOFF_SECONDS": "0.05",
        "HPO_WEBHOOK_MAX_ATTEMPTS": "2",
    }
    run_worker_with_env(database_url, [name], env)
    with session_scope(database_url) as session:
        study = session.get(Study, study_id)
        states = session.scalars(
            select(TrialRecord.state).where(TrialRecord.study_id == study_id)
        ).all()
    assert study is not None and study.status == "completed"
    assert sorted(states) == ["complete", "complete"]
    rows = exports(database_url, study_id)
    assert len(rows) == 2
    for row in rows:
        assert (row.state, row.attempts, row.run_id) == ("failed", 2, None)
        assert row.last_error and "Error" in row.last_error
        assert "ImportError" not in row.last_error, row.last_error  # MLflow ran and failed
