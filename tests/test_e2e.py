"""End to end: the real `hpo serve` process with real worker processes on a SQLite file."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import EnqueuedConfig, Worker
from service.studies.service import get_study, get_study_row
from tests.conftest import DIGITS_SPEC, free_port, http_client, tiny_spec

pytestmark = pytest.mark.slow

FOUR_CURVES = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


def hpo_command() -> list[str]:
    script = Path(sys.executable).parent / "hpo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli.main"]


class Service:
    def __init__(
        self,
        tmp: Path,
        workers: int,
        db_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db_url = db_url or f"sqlite:///{tmp / 'hpo.db'}"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = tmp / "serve.log"
        self._log = self.log_path.open("wb")
        env = {
            **os.environ,
            "HPO_WORKER_POLL_SECONDS": "0.2",
            "HPO_HEARTBEAT_SECONDS": "1",
            "HPO_STOP_DEADLINE_SECONDS": "2",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [
                *hpo_command(),
                "serve",
                "--port",
                self.url.rsplit(":", 1)[1],
                "--workers",
                str(workers),
                "--database-url",
                self.db_url,
                "--threads",
                "1",
            ],
            cwd=tmp,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.client = http_client(self.url)
        deadline = time.monotonic() + 300  # imports crawl on a loaded machine
        while True:
            try:
                if self.client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def wait_finished(self, study_id: int, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            study: dict[str, Any] = self.client.get(f"/api/studies/{study_id}").json()
            if study["status"] in ("completed", "failed") and study["counts"]["running"] == 0:
                return study
            time.sleep(0.2)
        raise AssertionError(f"study {study_id} did not finish:\n{self.log()}")

    def trials(self, study_id: int) -> list[dict[str, Any]]:
        page = self.client.get(f"/api/studies/{study_id}/trials", params={"limit": 1000})
        items: list[dict[str, Any]] = page.json()["items"]
        return items

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            self.client.close()
            self._log.close()
        return code


@pytest.fixture
def service2(served: Service) -> Service:
    """`hpo serve` with 2 workers, shared by the tests that neither kill nor stop it."""
    return served


def hpo_cli(svc: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*hpo_command(), *args, "--url", svc.url], capture_output=True, text=True, timeout=300
    )


def test_digits_study_end_to_end(service2: Service) -> None:
    response = service2.client.post("/api/studies", json=copy.deepcopy(DIGITS_SPEC))
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]

    study = service2.wait_finished(study_id)

    assert study["status"] == "completed", study
    trials = service2.trials(study_id)
    finished = [t for t in trials if t["state"] in ("complete", "pruned")]
    assert len(finished) == 6
    assert study["best_value"] >= 0.90
    for t in finished:
        detail = service2.client.get(f"/api/trials/{t['trial_id']}").json()
        n_epochs = len(detail["curves"]["val_accuracy"])
        assert n_epochs == 20 if t["state"] == "complete" else 1 <= n_epochs <= 20
        for metric in FOUR_CURVES:
            steps = [step for step, _ in detail["curves"][metric]]
            assert steps == list(range(1, n_epochs + 1)), (metric, t)

    best = service2.client.get(f"/api/studies/{study_id}/best").json()
    assert best["value"] == study["best_value"]
    assert best["config"]["hidden_units"] == 128
    assert best["test_accuracy"] >= 0.85

    # The CLI reads the same study over HTTP, by name.
    out = hpo_cli(service2, "best", "digits-demo", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["trial_id"] == best["trial_id"]
    out = hpo_cli(service2, "status", "digits-demo")
    assert "completed" in out.stdout and "finished 6/6" in out.stdout
    out = hpo_cli(service2, "trials", str(study_id))
    assert out.stdout.strip().endswith("(6 of 6)")


def test_cli_submit_and_bad_spec(service2: Service, tmp_path: Path) -> None:
    spec = tiny_spec("cli-tiny", n_trials=2)
    good = tmp_path / "tiny.yaml"
    good.write_text(yaml.safe_dump(spec))
    out = hpo_cli(service2, "submit", str(good), "--watch", "--interval", "0.5")
    assert out.returncode == 0, out.stderr
    assert "completed  finished 2/2" in out.stdout

    spec["space"]["lr"]["low"] = 1.0  # low >= high
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**spec, "name": "cli-bad"}))
    out = hpo_cli(service2, "submit", str(bad))
    assert out.returncode == 1
    assert "422" in out.stderr and "space.lr" in out.stderr
    names = [s["name"] for s in service2.client.get("/api/studies").json()]
    assert "cli-bad" not in names


def test_four_workers_forty_trials_ten_enqueued(tmp_path: Path) -> None:
    # `hpo serve`'s own setup: its local workers on a SQLite file. The same race on
    # PostgreSQL: tests/test_workers_e2e.py's eight `hpo worker` processes on five budgets
    # (PostgreSQL when HPO_TEST_DATABASE_URL is set), and tests/test_enqueue_concurrency.py
    # for enqueued configurations claimed concurrently, on both databases.
    svc = Service(tmp_path, workers=4)
    try:
        spec = tiny_spec("concurrency", n_trials=40)
        enqueued = [{"lr": round(0.001 * (i + 1), 4), "batch_size": 16} for i in range(10)]
        spec["enqueue"] = enqueued
        study_id = svc.client.post("/api/studies", json=spec).json()["id"]
        # A second study shares the same workers at the same time.
        other_id = svc.client.post("/api/studies", json=tiny_spec("beside", n_trials=5)).json()[
            "id"
        ]

        study = svc.wait_finished(study_id)
        other = svc.wait_finished(other_id)

        trials = svc.trials(study_id)
        assert study["status"] == "completed"
        assert len([t for t in trials if t["state"] in ("complete", "pruned")]) == 40
        assert [t for t in trials if t["state"] == "fail"] == []
        assert other["status"] == "completed"
        assert other["counts"]["complete"] + other["counts"]["pruned"] == 5
        for config in enqueued:
            assert sum(1 for t in trials if t["params"] == config) == 1, config
        # No worker crashed: the same four processes ran from start to end.
        with session_scope(svc.db_url) as session:
            workers = session.execute(select(Worker.pid, Worker.status)).all()
        assert len(workers) == 4
        assert {status for _, status in workers} == {"running"}
        assert "Traceback" not in svc.log()
    finally:
        assert svc.stop() == 0, svc.log()
    with session_scope(svc.db_url) as session:
        assert set(session.scalars(select(Worker.status)).all()) == {"stopped"}


def test_killed_worker_is_restarted_and_its_trial_replaced(tmp_path: Path) -> None:
    svc = Service(tmp_path, workers=1)
    try:
        spec = copy.deepcopy(DIGITS_SPEC)
        spec.update(name="kill-9", pruner={"name": "none"}, budget={"n_trials": 2})
        spec["objective"]["max_epochs"] = 80  # long enough that the kill lands mid-trial
        study_id = svc.client.post("/api/studies", json=spec).json()["id"]
        deadline = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < deadline:
            with session_scope(svc.db_url) as session:
                victim = session.scalar(
                    select(Worker.pid).where(Worker.current_trial_id.is_not(None))
                )
            time.sleep(0.2)
        assert victim is not None, svc.log()
        os.kill(victim, signal.SIGKILL)

        study = svc.wait_finished(study_id)

        trials = svc.trials(study_id)
        assert study["status"] == "completed"
        assert len([t for t in trials if t["state"] == "complete"]) == 2
        failed = [t for t in trials if t["state"] == "fail"]
        assert len(failed) == 1
        assert f"worker process {victim} exited" in failed[0]["error"]
        with session_scope(svc.db_url) as session:
            statuses = dict(session.execute(select(Worker.pid, Worker.status)).all())
        assert statuses[victim] == "dead"
        assert list(statuses.values()).count("running") == 1  # the replacement
    finally:
        assert svc.stop() == 0, svc.log()


def test_sigterm_stops_cleanly_and_leaves_no_trial_running(tmp_path: Path) -> None:
    svc = Service(tmp_path, workers=1)
    spec = copy.deepcopy(DIGITS_SPEC)
    spec.update(name="sigterm", pruner={"name": "none"}, budget={"n_trials": 3})
    spec["objective"]["max_epochs"] = 200
    study_id = svc.client.post("/api/studies", json=spec).json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if svc.client.get(f"/api/studies/{study_id}").json()["counts"]["running"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(svc.log())

    assert svc.stop() == 0, svc.log()

    with session_scope(svc.db_url) as session:
        study = get_study(session, study_id)
        row = get_study_row(session, study_id)
    assert study.counts.running == 0
    assert study.counts.fail == 1
    # The interrupted trial gave its slot back: a later worker re-runs its parameters.
    assert row.slots_used == study.counts.complete
    assert (row.n_running, row.n_claims) == (0, study.counts.complete + 1)
    with session_scope(svc.db_url) as session:
        retry = session.scalars(select(EnqueuedConfig).where(EnqueuedConfig.study_id == study_id))
        assert [(e.claimed, e.retry_number) for e in retry] == [(False, 1)]
    with session_scope(svc.db_url) as session:
        assert set(session.scalars(select(Worker.status)).all()) == {"stopped"}
