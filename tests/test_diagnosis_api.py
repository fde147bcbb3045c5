"""Diagnoses, study reports and learning-curve jobs over a real server and database (SQLite
and PostgreSQL), with a real worker training in-process."""

from __future__ import annotations

import os
import socket
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from service.core.db.engine import session_scope
from service.core.db.models import LearningCurveJob, TrialDiagnosis, Worker, utcnow
from service.core.settings import Settings
from service.scheduling.claims import reap_worker
from service.scheduling.jobs import MAX_ATTEMPTS, claim_job, requeue_orphans
from service.worker.process import WorkerProcess
from tests.conftest import tiny_spec, unique
from trainer.data_size import HELPS, NO_HELP
from trainer.diagnosis import KINDS
from trainer.fit_verdict import FIT_KINDS


def run_worker(settings: Settings) -> None:
    WorkerProcess(settings).run(until_idle=True, install_signals=False)


def submit(client: httpx.Client, spec: dict[str, Any]) -> int:
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def five_trial_spec(name: str) -> dict[str, Any]:
    spec = tiny_spec(name, n_trials=5)
    spec["objective"]["max_epochs"] = 6
    spec["space"]["dropout"] = {"type": "float", "low": 0.0, "high": 0.5}
    return spec


def stored_count(url: str, trial_ids: list[int]) -> int:
    with session_scope(url) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(TrialDiagnosis)
                .where(TrialDiagnosis.trial_id.in_(trial_ids))
            )
            or 0
        )


def test_finished_trials_are_diagnosed_stored_and_reported(
    client: httpx.Client, settings: Settings
) -> None:
    study_id = submit(client, five_trial_spec(unique("diag")))
    run_worker(settings)

    items = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert len(items) == 5
    ids = [t["trial_id"] for t in items]
    # The worker stored every trial's findings when it ended.
    assert stored_count(settings.database_url, ids) == 5
    kinds = []
    for trial_id in ids:
        trial = client.get(f"/api/trials/{trial_id}").json()
        alone = client.get(f"/api/trials/{trial_id}/diagnosis").json()
        assert alone == {"trial_id": trial_id, "findings": trial["diagnosis"]}
        assert trial["diagnosis"], "6 epochs of a finished trial always say something"
        for f in trial["diagnosis"]:
            assert f["kind"] in KINDS
            assert f["severity"] in ("info", "warning", "critical")
            assert all(isinstance(v, int | float | str) for v in f["evidence"].values())
            kinds.append(f["kind"])
            if f["kind"] in FIT_KINDS:
                # The fit is read in error terms against moons' chance level (2 classes)
                # and the noise of its 40 validation rows.
                ev = f["evidence"]
                assert ev["chance_error"] == 0.5, f
                assert ev["val_error_noise"] >= (0.025 * 0.975 / 40) ** 0.5, f

    report = client.get(f"/api/studies/{study_id}/report").json()
    assert set(report) >= {
        "study_id",
        "n_trials",
        "finding_counts",
        "best_trial_findings",
        "importances",
        "boundary_hits",
        "advice",
    }
    assert report["study_id"] == study_id
    assert report["n_trials"] == 5
    assert report["finding_counts"] == {k: kinds.count(k) for k in set(kinds)}
    best = client.get(f"/api/studies/{study_id}/best").json()
    assert report["best_trial_id"] == best["trial_id"]
    best_trial = client.get(f"/api/trials/{best['trial_id']}").json()
    assert report["best_trial_findings"] == best_trial["diagnosis"]
    # Five completed trials are enough for Optuna's fANOVA: one importance per searched param.
    assert set(report["importances"]) == {"lr", "batch_size", "dropout"}
    assert sum(report["importances"].values()) == pytest.approx(1.0)
    assert report["advice"].startswith("5 finished trials diagnosed:")
    assert f"#{best['number']}" in report["advice"]


def test_a_trial_without_stored_findings_is_diagnosed_on_read(
    client: httpx.Client, settings: Settings
) -> None:
    study_id = submit(client, five_trial_spec(unique("ondemand")))
    run_worker(settings)
    trial_id = client.get(f"/api/studies/{study_id}/trials").json()["items"][0]["trial_id"]
    before = client.get(f"/api/trials/{trial_id}/diagnosis").json()
    with session_scope(settings.database_url) as session:  # as if its worker had been killed
        session.execute(delete(TrialDiagnosis).where(TrialDiagnosis.trial_id == trial_id))
    assert stored_count(settings.database_url, [trial_id]) == 0

    assert client.get(f"/api/trials/{trial_id}/diagnosis").json() == before
    assert stored_count(settings.database_url, [trial_id]) == 1


def test_report_before_enough_trials_says_why(client: httpx.Client, settings: Settings) -> None:
    study_id = submit(client, tiny_spec(unique("few"), n_trials=2))
    empty = client.get(f"/api/studies/{study_id}/report").json()
    assert empty["n_trials"] == 0
    assert empty["best_trial_id"] is None
    assert empty["advice"] == "No finished trials yet: nothing to report."
    run_worker(settings)
    report = client.get(f"/api/studies/{study_id}/report").json()
    assert report["n_trials"] == 2
    assert report["importances"] == {}
    assert "at least 4 completed trials (this study has 2)" in report["importances_note"]
    assert client.get("/api/studies/999999/report").status_code == 404
    assert client.get("/api/trials/999999/diagnosis").status_code == 404


def test_learning_curve_job_runs_on_a_worker_and_concludes(
    client: httpx.Client, settings: Settings
) -> None:
    spec = tiny_spec(unique("lc"), n_trials=1)
    spec["dataset"] = {"name": "digits"}
    spec["objective"]["max_epochs"] = 3
    study_id = submit(client, spec)
    path = f"/api/studies/{study_id}/learning-curve"
    assert client.get(path).status_code == 404
    early = client.post(path)
    assert early.status_code == 409
    assert "no completed trial" in early.json()["detail"]
    run_worker(settings)

    bad = client.post(path, json={"fractions": [0.5, 1.5]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][-2:] == ["fractions", 1]
    queued = client.post(path)
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert job["state"] == "queued"
    assert job["fractions"] == [0.1, 0.25, 0.5, 1.0]
    best = client.get(f"/api/studies/{study_id}/best").json()
    assert job["source_trial_id"] == best["trial_id"]
    assert job["config"] == best["config"]
    assert client.post(path).status_code == 409  # one at a time

    run_worker(settings)

    done = client.get(path).json()
    assert done["state"] == "complete", done
    assert done["attempts"] == 1
    assert [p["fraction"] for p in done["points"]] == [0.1, 0.25, 0.5, 1.0]
    sizes = [p["n_train"] for p in done["points"]]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert sizes[-1] == 1077  # the whole training split of digits (60% of 1797)
    # Equal optimizer steps per size: 3 epochs at 100% -> 30 at 10%.
    assert [p["epochs"] for p in done["points"]] == [30, 12, 6, 3]
    assert done["verdict"] in (HELPS, NO_HELP)
    assert done["explanation"]
    gain = done["points"][-1]["val_accuracy"] - done["points"][-2]["val_accuracy"]
    assert done["evidence"]["gain_last_doubling"] == pytest.approx(gain)


def _worker_row(url: str) -> int:
    with session_scope(url) as session:
        w = Worker(
            host=socket.gethostname(),
            pid=os.getpid(),
            device="cpu",
            version="test",
            status="running",
            started_at=utcnow(),
            heartbeat_at=utcnow(),
        )
        session.add(w)
        session.flush()
        return w.id


def test_a_job_whose_worker_died_runs_again_elsewhere(
    client: httpx.Client, settings: Settings
) -> None:
    url = settings.database_url
    study_id = submit(client, tiny_spec(unique("lc-dead"), n_trials=1))
    run_worker(settings)
    job_id = client.post(f"/api/studies/{study_id}/learning-curve").json()["id"]
    a, b = _worker_row(url), _worker_row(url)

    first = claim_job(url, a)
    assert first is not None and first.id == job_id
    assert claim_job(url, b) is None  # claimed once: b finds nothing
    reap_worker(url, a, "test: worker a died")  # what the heartbeat reaper does
    again = claim_job(url, b)
    assert again is not None and again.id == job_id
    assert again.worker_id == b and again.attempts == 2

    # A job whose workers keep dying fails after MAX_ATTEMPTS starts.
    for _ in range(MAX_ATTEMPTS - 2):
        reap_worker(url, b, "test: died again")
        b = _worker_row(url)
        assert claim_job(url, b) is not None
    reap_worker(url, b, "test: died again")
    requeue_orphans(url, _worker_row(url))
    with session_scope(url) as session:
        job = session.get(LearningCurveJob, job_id)
        assert job is not None
        assert job.state == "fail"
        assert f"died {MAX_ATTEMPTS} times" in (job.error or "")


def test_worker_stops_a_confidently_diverged_trial_and_says_why(
    client: httpx.Client, settings: Settings
) -> None:
    # Adam with lr 0.5 on wine: the training loss sits ~1000x above chance level.
    spec = tiny_spec(
        unique("blowup"),
        n_trials=1,
        dataset={"name": "wine"},
        space={"batch_size": {"type": "categorical", "choices": [16]}},
        fixed={
            "lr": 0.5,
            "optimizer": "adam",
            "activation": "elu",
            "hidden_layers": 3,
            "hidden_units": 64,
        },
    )
    spec["objective"]["max_epochs"] = 10
    study_id = submit(client, spec)
    run_worker(settings)

    (item,) = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert item["state"] == "pruned"
    trial = client.get(f"/api/trials/{item['trial_id']}").json()
    assert len(trial["curves"]["train_loss"]) == 3  # stopped after 3 epochs of 10
    (diverged,) = [f for f in trial["diagnosis"] if f["kind"] == "diverged"]
    assert diverged["severity"] == "critical"
    assert diverged["evidence"]["stopped_early"].startswith("diverged for 3 epochs in a row")
    assert diverged["evidence"]["train_loss_over_chance"] > 10
    assert diverged["remedies"][0].startswith(
        "lower lr (too high a learning rate diverges; fixed at 0.5"
    )


def test_openapi_documents_the_diagnosis_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/api/trials/{trial_id}/diagnosis"]
    assert "get" in paths["/api/studies/{study_id}/report"]
    assert {"get", "post"} <= set(paths["/api/studies/{study_id}/learning-curve"])


def test_cli_prints_a_trials_findings_and_the_report(
    client: httpx.Client, settings: Settings, server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli.main import main

    name = unique("cli-diag")
    study_id = submit(client, tiny_spec(name, n_trials=1))
    run_worker(settings)
    trial_id = client.get(f"/api/studies/{study_id}/trials").json()["items"][0]["trial_id"]
    findings = client.get(f"/api/trials/{trial_id}/diagnosis").json()["findings"]

    assert main(["trial", str(trial_id), "--diagnosis", "--url", server_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"trial {trial_id}:")
    for f in findings:
        assert f"{f['kind']} [{f['severity']}]" in out
    assert main(["report", name, "--url", server_url]) == 0
    assert "advice: 1 finished trial diagnosed:" in capsys.readouterr().out


def test_a_worker_restricted_to_studies_takes_only_their_jobs(
    client: httpx.Client, settings: Settings
) -> None:
    """`hpo worker --studies X` runs X's learning-curve jobs and no other study's."""
    url = settings.database_url
    mine = unique("lc-mine")
    theirs_id = submit(client, tiny_spec(unique("lc-theirs"), n_trials=1))
    mine_id = submit(client, tiny_spec(mine, n_trials=1))
    run_worker(settings)
    theirs_job = client.post(f"/api/studies/{theirs_id}/learning-curve").json()["id"]
    mine_job = client.post(f"/api/studies/{mine_id}/learning-curve").json()["id"]
    worker = _worker_row(url)

    assert claim_job(url, worker, [mine]) is not None
    with session_scope(url) as session:
        assert session.get(LearningCurveJob, theirs_job).state == "queued"  # type: ignore[union-attr]
        assert session.get(LearningCurveJob, mine_job).state == "running"  # type: ignore[union-attr]
    other = _worker_row(url)  # (a worker asking again gives up its own running job)
    assert claim_job(url, other, [str(mine_id)]) is None  # by id: only its job, taken
    job = claim_job(url, other)  # unrestricted: the other study's job
    assert job is not None and job.id == theirs_job
