"""Bad trials do not take the worker down: one that raises, one that diverges to NaN and one
that runs out of GPU memory (simulated) each fail with their reason while the worker goes
on; out of memory, the trial is re-run once with half the batch size, recorded. Also
/api/workers and /metrics over a real server, and retries through database outages."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import httpx
import pytest
import torch
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError

from service.core.db.engine import session_scope
from service.core.db.models import TrialRecord, Worker, utcnow
from service.core.db.retry import retry_db
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.worker import trial as worker_module
from service.worker.process import WorkerProcess
from tests.conftest import tiny_spec, unique
from trainer import EpochMetrics, FitResult, TensorData, TrainConfig
from trainer.loop import EpochCallback

RAISES, DIVERGES, OOM_ONCE, OOM_ALWAYS = 0.011, 0.012, 0.013, 0.014


def scripted_fit(real_fit: Any, calls: list[TrainConfig]) -> Any:
    """The real trainer, except for four learning rates that pick a failure."""

    def fit(
        config: TrainConfig,
        data: TensorData,
        on_epoch: EpochCallback | None,
        **kwargs: Any,
    ) -> FitResult:
        calls.append(config)
        if config.lr == RAISES:
            raise RuntimeError("boom in the model")
        if config.lr == DIVERGES:  # the real loop meets a real NaN
            nan = torch.full_like(data.x_train, float("nan"))
            return real_fit(
                config,
                dataclasses.replace(data, x_train=nan),
                on_epoch,
                **kwargs,
            )
        if config.lr == OOM_ALWAYS:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if config.lr == OOM_ONCE and config.batch_size > 16:

            def one_epoch_then_oom(m: EpochMetrics) -> bool:
                assert on_epoch is not None
                on_epoch(m)  # epoch 1's curve points are written, then memory runs out
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

            return real_fit(config, data, one_epoch_then_oom, **kwargs)
        return real_fit(config, data, on_epoch, **kwargs)

    return fit


def test_bad_trials_fail_with_their_reason_and_the_worker_goes_on(
    settings: Settings, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[TrainConfig] = []
    monkeypatch.setattr(worker_module, "fit", scripted_fit(worker_module.fit, calls))
    name = unique("bad-trials")
    lrs = [RAISES, DIVERGES, OOM_ONCE, OOM_ALWAYS]
    spec = tiny_spec(name, n_trials=4, budget={"n_trials": 4, "max_failed_trials": 10})
    spec["enqueue"] = [{"lr": lr, "batch_size": 32} for lr in lrs]
    study_id = client.post("/api/studies", json=spec).json()["id"]

    WorkerProcess(settings, [name]).run(until_idle=True, install_signals=False)

    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed"
    assert (study["counts"]["complete"], study["counts"]["fail"]) == (4, 3)
    trials = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    by_lr = {t["params"]["lr"]: t for t in trials if t["params"]["lr"] in lrs}
    assert by_lr[RAISES]["state"] == "fail"
    assert by_lr[RAISES]["error"] == "RuntimeError: boom in the model"
    assert by_lr[DIVERGES]["state"] == "fail"
    assert by_lr[DIVERGES]["error"].startswith("DivergedError: ")
    assert "nan" in by_lr[DIVERGES]["error"]
    # Out of memory once: re-run with half the batch size, and it completed.
    once = by_lr[OOM_ONCE]
    assert (once["state"], once["oom_batch_size"]) == ("complete", 16)
    assert [c.batch_size for c in calls if c.lr == OOM_ONCE] == [32, 16]
    assert get_storage(settings.database_url).get_trial(once["trial_id"]).user_attrs == {
        "oom_batch_size": 16
    }
    # The first attempt's epoch-1 points made way for the re-run's: each epoch once.
    curves = client.get(f"/api/trials/{once['trial_id']}").json()["curves"]
    assert [step for step, _ in curves["val_loss"]] == [1, 2]
    # Out of memory again at half the batch size: failed, with both sizes in the reason.
    always = by_lr[OOM_ALWAYS]
    assert always["state"] == "fail"
    assert always["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert "also with batch_size 16, half of 32" in always["error"]
    # None of the failures is retried (they are the trial's fault), and one worker ran all.
    assert all(t["retry_of"] is None for t in trials)
    with session_scope(settings.database_url) as session:
        workers = session.scalars(
            select(TrialRecord.worker_id).where(TrialRecord.study_id == study_id)
        ).all()
    assert len(workers) == 7 and len(set(workers)) == 1

    # The worker stopped cleanly and is listed so; a silent one is shown dead.
    listed = {w["id"]: w for w in client.get("/api/workers").json()}
    me = listed[workers[0]]
    assert (me["status"], me["device"], me["current_trial_id"], me["gpu_name"]) == (
        "stopped",
        "cpu",
        None,
        None,
    )
    with session_scope(settings.database_url) as session:
        silent = Worker(
            host="gone",
            pid=4242,
            device="cuda",
            gpu_name="NVIDIA H100",
            gpu_memory_mb=81559,
            version="0.1.0",
            status="running",
            current_trial_id=123,
            heartbeat_at=utcnow() - timedelta(seconds=settings.worker_grace_seconds + 5),
        )
        session.add(silent)
        session.flush()
        silent_id = silent.id
    dead = client.get("/api/workers", params={"status": "dead"}).json()
    assert silent_id in [w["id"] for w in dead]
    shown = next(w for w in dead if w["id"] == silent_id)
    assert shown["heartbeat_age_seconds"] > settings.worker_grace_seconds
    assert (shown["gpu_name"], shown["gpu_memory_mb"]) == ("NVIDIA H100", 81559)
    assert client.get("/api/workers", params={"status": "zombie"}).status_code == 422

    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert f'hpo_trials{{state="complete",study="{study_id}"}} 4.0' in text  # ids, not names
    assert f'hpo_trials{{state="fail",study="{study_id}"}} 3.0' in text
    assert 'hpo_trial_duration_seconds_count{state="fail"}' in text
    assert "hpo_database_up 1.0" in text
    assert "hpo_workers_alive" in text
    with session_scope(settings.database_url) as session:
        session.execute(delete(Worker).where(Worker.id == silent_id))


def test_retry_db_waits_out_transient_errors_only() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return "done"

    assert retry_db(flaky, "test") == "done"
    assert len(attempts) == 3

    def broken() -> None:
        attempts.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    attempts.clear()
    with pytest.raises(IntegrityError):
        retry_db(broken, "test")
    assert len(attempts) == 1
