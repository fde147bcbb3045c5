"""End to end: `hpo serve` with real worker processes (the shared SQLite one) — a finished
study shows its trials' diagnoses and its report, and a data-size learning curve on digits
runs on the workers and concludes, also when the worker running it is killed."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import LearningCurveJob, Worker
from tests.conftest import unique
from tests.test_e2e import Service, hpo_cli
from trainer.data_size import HELPS, NO_HELP
from trainer.diagnosis import KINDS

pytestmark = pytest.mark.slow


def digits_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": "digits"},
        "objective": {"metric": "val_accuracy", "max_epochs": 4},
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        },
        "fixed": {"hidden_layers": 1, "hidden_units": 32},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 4},
    }


def running_job_pid(svc: Service, job_id: int) -> int:
    """The pid of the worker process running the job, once it has finished a first size."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with session_scope(svc.db_url) as session:
            row = session.execute(
                select(Worker.pid, LearningCurveJob.points)
                .join(Worker, Worker.id == LearningCurveJob.worker_id)
                .where(LearningCurveJob.id == job_id, LearningCurveJob.state == "running")
            ).first()
        if row is not None and row.points:
            return int(row.pid)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran:\n{svc.log()}")


def test_diagnoses_report_and_learning_curve_through_hpo_serve(served: Service) -> None:
    svc = served
    name = unique("diag-e2e")
    response = svc.client.post("/api/studies", json=digits_spec(name))
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    assert svc.wait_finished(study_id)["status"] == "completed"

    kinds: list[str] = []
    for t in svc.trials(study_id):
        trial = svc.client.get(f"/api/trials/{t['trial_id']}").json()
        assert trial["diagnosis"], trial
        assert {f["kind"] for f in trial["diagnosis"]} <= set(KINDS)
        assert svc.client.get(f"/api/trials/{t['trial_id']}/diagnosis").json() == {
            "trial_id": t["trial_id"],
            "findings": trial["diagnosis"],
        }
        kinds += [f["kind"] for f in trial["diagnosis"]]

    report = svc.client.get(f"/api/studies/{study_id}/report").json()
    assert report["n_trials"] == 4
    assert sum(report["finding_counts"].values()) == len(kinds)
    assert set(report["importances"]) == {"lr", "dropout"}
    assert report["advice"].startswith("4 finished trials diagnosed:")

    text = hpo_cli(svc, "report", name)
    assert text.returncode == 0, text.stderr
    assert "advice: 4 finished trials diagnosed:" in text.stdout
    best_id = report["best_trial_id"]
    one = hpo_cli(svc, "trial", str(best_id), "--diagnosis")
    assert one.returncode == 0, one.stderr
    for f in report["best_trial_findings"]:
        assert f"{f['kind']} [{f['severity']}]" in one.stdout

    curve = hpo_cli(svc, "learning-curve", name, "--watch", "--interval", "0.5")
    assert curve.returncode == 0, curve.stderr + svc.log()
    assert "verdict: more data" in curve.stdout
    job = svc.client.get(f"/api/studies/{study_id}/learning-curve").json()
    assert job["state"] == "complete"
    assert job["verdict"] in (HELPS, NO_HELP)
    assert f"verdict: {job['verdict']}" in curve.stdout
    assert [p["fraction"] for p in job["points"]] == [0.1, 0.25, 0.5, 1.0]
    assert job["source_trial_id"] == best_id

    # kill -9 the worker running the next one: it goes back to the queue and completes
    # on a worker that is alive, on its second start.
    path = f"/api/studies/{study_id}/learning-curve"
    fractions = [0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]
    job_id = svc.client.post(path, json={"fractions": fractions}).json()["id"]
    pid = running_job_pid(svc, job_id)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 300
    while (job := svc.client.get(path).json())["state"] != "complete":
        assert job["state"] != "fail", job
        assert time.monotonic() < deadline, svc.log()
        time.sleep(0.5)
    assert job["id"] == job_id
    assert job["attempts"] == 2
    assert [p["fraction"] for p in job["points"]] == fractions
    assert job["verdict"] in (HELPS, NO_HELP)
