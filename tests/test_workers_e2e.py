"""Workers as users run them on GPU nodes: `hpo worker` processes beside `hpo serve
--workers 0`, on SQLite and PostgreSQL. Exact budgets with 8 processes, kill -9 with a
heartbeat-driven retry, a service restart, a PostgreSQL restart, and the stop deadline."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from service.core.db.engine import session_scope
from service.core.db.migrate import upgrade
from service.core.db.models import CurvePoint, EnqueuedConfig, TrialRecord, Worker
from service.core.optuna_storage import get_storage
from service.core.processes import process_alive, process_start
from service.studies.service import create_study, get_study_row
from service.studies.spec import StudySpec
from tests.conftest import one_database, tiny_spec
from tests.test_e2e import Service, hpo_command

# Generous limits: 8 processes importing torch at once crawl on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
STARTUP_S = 600.0
EPOCHS = 60  # per trial of the kill test: long enough that the kill lands mid-trial

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
WORKER_ENV = {"HPO_WORKER_POLL_SECONDS": "0.1", "HPO_HEARTBEAT_SECONDS": "1"}


class Workers:
    """`hpo worker ARGS` as its own process (a pool parent or one worker)."""

    def __init__(
        self,
        tmp: Path,
        db_url: str,
        *args: str,
        name: str = "worker",
        grace_s: float = 60,
        env: dict[str, str] | None = None,
        detached: bool = False,
    ) -> None:
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*hpo_command(), "worker", "--database-url", db_url, "--threads", "1", *args],
            env={
                **os.environ,
                **WORKER_ENV,
                "HPO_WORKER_GRACE_SECONDS": str(grace_s),
                **(env or {}),
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=detached,  # Ctrl-C in the test's terminal does not reach it
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def signal_stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 120) -> int:
        self.signal_stop()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # leave no process behind; the caller's assertion fails
            self.proc.wait()
            return -9
        finally:
            self._log.close()


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OperationalError:  # the database is restarting
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def live_workers(url: str) -> list[Worker]:
    with session_scope(url) as session:
        return list(session.scalars(select(Worker).where(Worker.status == "running")).all())


def curve_steps(url: str, trial_id: int) -> list[int]:
    with session_scope(url) as session:
        return list(
            session.scalars(
                select(CurvePoint.step)
                .where(CurvePoint.trial_id == trial_id, CurvePoint.metric == "val_loss")
                .order_by(CurvePoint.step)
            ).all()
        )


@pytest.fixture
def shared_database_url(tmp_path: Path) -> Iterator[str]:
    """PostgreSQL, what GPU nodes share, when HPO_TEST_DATABASE_URL is set; else SQLite."""
    yield from one_database(tmp_path)


def slow_spec(name: str, n_trials: int, epochs: int) -> dict[str, Any]:
    """Trials of a few seconds: enough for a kill or a restart to land mid-trial."""
    spec = tiny_spec(name, n_trials)
    spec["dataset"] = {"name": "moons", "n_samples": 400, "noise": 0.2}
    spec["space"] = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}
    spec["fixed"] = {"hidden_layers": 1, "hidden_units": 16, "batch_size": 8}
    spec["objective"] = {"metric": "val_accuracy", "max_epochs": epochs}
    return spec


def test_eight_worker_processes_keep_five_budgets_exact(
    tmp_path: Path, shared_database_url: str
) -> None:
    svc = Service(tmp_path, workers=0, db_url=shared_database_url)
    pool = Workers(tmp_path, svc.db_url, "--device", "cpu", "--trials-per-gpu", "8")
    try:
        wait_for(lambda: len(live_workers(svc.db_url)) == 8, STARTUP_S, "8 workers")
        ids = [
            svc.client.post("/api/studies", json=tiny_spec(f"exact-{i}", n_trials=20)).json()["id"]
            for i in range(5)
        ]
        for study_id in ids:
            study = svc.wait_finished(study_id, timeout=STARTUP_S)
            assert study["status"] == "completed"
            # Exactly the budget, and no trial at all beyond it in Optuna's study.
            assert study["counts"]["complete"] + study["counts"]["pruned"] == 20, study
            assert (study["counts"]["fail"], study["counts"]["running"]) == (0, 0), study
            assert len(svc.trials(study_id)) == 20
            with session_scope(svc.db_url) as session:
                assert get_study_row(session, study_id).slots_used == 20

        listed = svc.client.get("/api/workers", params={"status": "running"}).json()
        assert len(listed) == 8 and {w["device"] for w in listed} == {"cpu"}
        assert len({w["pid"] for w in listed}) == 8
        assert all(w["heartbeat_age_seconds"] < 60 for w in listed)
        out = subprocess.run(
            [*hpo_command(), "workers", "--url", svc.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert sum(1 for line in out.stdout.splitlines() if " running " in line) == 8

        metrics = svc.client.get("/metrics").text
        assert "hpo_workers_alive 8.0" in metrics
        for study_id in ids:
            assert f'hpo_trials{{state="complete",study="{study_id}"}} 20.0' in metrics
        assert f'hpo_queue_depth{{study="{ids[0]}"}}' not in metrics  # finished: no queue

        assert pool.stop() == 0, pool.log()
        with session_scope(svc.db_url) as session:
            assert set(session.scalars(select(Worker.status)).all()) == {"stopped"}
    finally:
        pool.stop()
        assert svc.stop() == 0, svc.log()
    assert "Traceback" not in pool.log()


def test_kill_9_retry_by_heartbeat_and_a_service_restart(
    tmp_path: Path, shared_database_url: str
) -> None:
    svc = Service(tmp_path, workers=0, db_url=shared_database_url)
    # A short grace period, so that the killed worker is noticed soon.
    workers = [
        Workers(tmp_path, svc.db_url, "--device", "cpu", name=f"w{i}", grace_s=10) for i in range(4)
    ]
    try:
        wait_for(lambda: len(live_workers(svc.db_url)) == 4, STARTUP_S, "4 workers")
        study_id = svc.client.post("/api/studies", json=slow_spec("kill9", 4, EPOCHS)).json()["id"]

        def busy_with_curves() -> Worker | None:
            for w in live_workers(svc.db_url):
                if w.current_trial_id is not None and curve_steps(svc.db_url, w.current_trial_id):
                    return w
            return None

        victim = wait_for(busy_with_curves, STARTUP_S, "a worker mid-trial")
        victim_trial = victim.current_trial_id
        assert victim_trial is not None
        os.kill(victim.pid, signal.SIGKILL)
        survivors = [w for w in workers if w.proc.pid != victim.pid]
        assert len(survivors) == 3

        # The API restarts while the workers carry on; nothing depends on it.
        assert svc.stop() == 0, svc.log()
        svc = Service(tmp_path, workers=0, db_url=svc.db_url)
        study = svc.wait_finished(study_id, timeout=STARTUP_S)

        assert study["status"] == "completed"
        trials = {t["trial_id"]: t for t in svc.trials(study_id)}
        finished = [t for t in trials.values() if t["state"] in ("complete", "pruned")]
        assert len(finished) == 4
        assert study["counts"]["running"] == 0
        killed = trials[victim_trial]
        assert killed["state"] == "fail"
        assert f"worker {victim.id} stopped sending heartbeats" in killed["error"]
        # Re-run with the same parameters, linked both ways, and finished.
        retry = trials[killed["retried_by"]]
        assert retry["retry_of"] == victim_trial
        assert retry["params"] == killed["params"]
        assert retry["state"] in ("complete", "pruned")
        # No curve point lost or duplicated: every finished trial has each epoch once.
        for t in finished:
            detail = svc.client.get(f"/api/trials/{t['trial_id']}").json()
            for metric, points in detail["curves"].items():
                assert [s for s, _ in points] == list(range(1, EPOCHS + 1)), (metric, t)
        with session_scope(svc.db_url) as session:
            statuses = dict(session.execute(select(Worker.pid, Worker.status)).all())
        assert statuses[victim.pid] == "dead"
        assert [statuses[w.proc.pid] for w in survivors] == ["running"] * 3
        for w in survivors:
            w.signal_stop()
        for w in survivors:
            assert w.stop() == 0, w.log()
    finally:
        for w in workers:
            w.signal_stop()
        for w in workers:
            w.stop()
        assert svc.stop() == 0, svc.log()


def test_sigterm_past_the_deadline_interrupts_a_long_epoch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    upgrade(url)
    spec = tiny_spec("long-epoch", n_trials=1)
    spec["dataset"] = {"name": "digits"}
    spec["space"] = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    # Batch size 1 through 3 x 2048 units: one epoch takes far longer than the deadline.
    spec["fixed"] = {"hidden_layers": 3, "hidden_units": 2048, "batch_size": 1}
    with session_scope(url) as session:
        study_id = create_study(session, StudySpec.model_validate(spec)).id
    worker = Workers(tmp_path, url, "--device", "cpu", "--stop-deadline", "1")
    try:

        def running_record() -> TrialRecord | None:
            with session_scope(url) as session:
                return session.scalar(select(TrialRecord).where(TrialRecord.state == "running"))

        record = wait_for(running_record, STARTUP_S, "the trial to start")
        time.sleep(0.5)  # into the first epoch
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=120) == 0, worker.log()
    finally:
        worker.stop()

    assert record.optuna_trial_id is not None
    with session_scope(url) as session:
        done = session.get(TrialRecord, record.id)
        assert done is not None and done.state == "fail"
        assert done.error is not None and "stop deadline (1s)" in done.error
        retry = session.scalar(select(EnqueuedConfig).where(EnqueuedConfig.study_id == study_id))
        assert retry is not None and retry.retry_of == record.optuna_trial_id
        assert session.scalar(select(Worker.status)) == "stopped"
    frozen = get_storage(url).get_trial(record.optuna_trial_id)
    assert frozen.state.name == "FAIL"
    assert retry.params == frozen.params
    assert curve_steps(url, record.optuna_trial_id) == []  # stopped mid-epoch 1
    with session_scope(url) as session:
        row = get_study_row(session, study_id)
    assert (row.slots_used, row.n_running) == (0, 0)


def worker_statuses(url: str) -> dict[int, str]:
    with session_scope(url) as session:
        return {pid: status for pid, status in session.execute(select(Worker.pid, Worker.status))}


def test_killing_serve_stops_its_workers_and_a_restart_stops_stale_ones(
    tmp_path: Path, shared_database_url: str
) -> None:
    """Issue 17 §7: SIGKILL of `hpo serve` left its two workers running, and a restarted
    `hpo serve --workers 2` then showed four running workers."""
    url = shared_database_url
    upgrade(url)
    # Workers left by a supervisor that died and could not take them along: started here
    # without a lifeline, in their own session, naming a supervisor process that is gone.
    gone = subprocess.Popen(["sleep", "60"])
    supervisor = f"{gone.pid}:{process_start(gone.pid)}"
    gone.kill()
    gone.wait()
    stale = [
        Workers(
            tmp_path,
            url,
            "--device",
            "cpu",
            name=f"stale{i}",
            env={"HPO_SUPERVISOR": supervisor},
            detached=True,
        )
        for i in range(2)
    ]
    svc: Service | None = None
    try:
        wait_for(lambda: len(live_workers(url)) == 2, STARTUP_S, "2 stale workers")
        stale_pids = {w.proc.pid for w in stale}

        svc = Service(tmp_path, workers=2, db_url=url)
        # Serving means the sweep is over: the stale workers stopped cleanly before the
        # new ones started.
        assert [w.proc.poll() for w in stale] == [0, 0], [w.log() for w in stale]
        assert {worker_statuses(url)[pid] for pid in stale_pids} == {"stopped"}

        client = svc.client

        def two_new_running() -> list[dict[str, Any]] | None:
            running: list[dict[str, Any]] = client.get(
                "/api/workers", params={"status": "running"}
            ).json()
            return running if len(running) == 2 else None

        running = wait_for(two_new_running, STARTUP_S, "2 new workers")
        pids = {w["pid"] for w in running}
        assert not pids & stale_pids
        starts = {pid: process_start(pid) for pid in pids}

        svc.proc.kill()  # SIGKILL: nothing of `hpo serve` runs any more
        svc.proc.wait(timeout=60)
        wait_for(
            lambda: not any(process_alive(pid, start) for pid, start in starts.items()),
            120,
            "the killed service's workers to exit",
        )
        # They were stopped, not killed: each recorded its own stop.
        assert {worker_statuses(url)[pid] for pid in pids} == {"stopped"}
        assert "Traceback" not in svc.log()
    finally:
        for w in stale:
            w.stop()
        if svc is not None:
            svc.stop()


def test_ctrl_c_of_serve_exits_130_after_stopping_its_workers(tmp_path: Path) -> None:
    """Issue 12 §5: Ctrl-C printed a KeyboardInterrupt traceback after the clean shutdown."""
    svc = Service(tmp_path, workers=1)
    try:
        wait_for(lambda: len(live_workers(svc.db_url)) == 1, STARTUP_S, "the worker")
        (pid,) = worker_statuses(svc.db_url)
        svc.proc.send_signal(signal.SIGINT)
        assert svc.proc.wait(timeout=120) == 130, svc.log()
    finally:
        svc.stop()
    assert worker_statuses(svc.db_url) == {pid: "stopped"}
    log = svc.log()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "Application shutdown complete" in log


def pg_restart_command() -> list[str] | None:
    url = os.environ.get("HPO_TEST_DATABASE_URL")
    if not url or not os.environ.get("HPO_TEST_PG_RESTART") or not shutil.which("pg_ctlcluster"):
        return None
    if make_url(url).host not in ("127.0.0.1", "localhost"):
        return None
    versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
    if len(versions) != 1:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "restart"]


@pytest.fixture
def pg_restart() -> Iterator[list[str]]:
    command = pg_restart_command()
    if command is None:
        pytest.skip("needs HPO_TEST_PG_RESTART=1, a local HPO_TEST_DATABASE_URL, pg_ctlcluster")
    yield command


@pytest.mark.serial  # it restarts the PostgreSQL server: nothing else may run meanwhile
def test_postgresql_restart_mid_study(
    tmp_path: Path, pg_restart: list[str], shared_database_url: str
) -> None:
    url = shared_database_url
    upgrade(url)
    with session_scope(url) as session:
        study_id = create_study(
            session, StudySpec.model_validate(slow_spec("pg-restart", 6, 40))
        ).id
    pool = Workers(tmp_path, url, "--device", "cpu", "--trials-per-gpu", "2")
    try:

        def mid_trial() -> bool:
            busy = [w for w in live_workers(url) if w.current_trial_id is not None]
            return len(busy) == 2 and all(curve_steps(url, w.current_trial_id) for w in busy)  # type: ignore[arg-type]

        wait_for(mid_trial, STARTUP_S, "both workers mid-trial")
        subprocess.run(pg_restart, check=True, timeout=120, capture_output=True)

        def finished() -> bool:
            with session_scope(url) as session:
                return get_study_row(session, study_id).status == "completed"

        wait_for(finished, STARTUP_S, "the study to complete after the restart")
        with session_scope(url) as session:
            states = dict(
                session.execute(
                    select(TrialRecord.state, func.count())
                    .where(TrialRecord.study_id == study_id)
                    .group_by(TrialRecord.state)
                ).all()
            )
            workers = session.execute(select(Worker.pid, Worker.status)).all()
        assert states.get("complete", 0) + states.get("pruned", 0) == 6, states
        assert set(states) <= {"complete", "pruned", "fail"}, states  # none left running
        # No crash loop: the same two processes ran throughout, and saw the outage.
        assert len(workers) == 2 and {s for _, s in workers} == {"running"}, workers
        assert pool.proc.poll() is None
        # (the whole log: its tail is the per-epoch lines of the trials after the outage)
        assert "database unavailable" in pool.log_path.read_text(errors="replace")
        with session_scope(url) as session:
            optuna_id = get_study_row(session, study_id).optuna_study_id
        optuna_states = {t.state.name for t in get_storage(url).get_all_trials(optuna_id)}
        assert "RUNNING" not in optuna_states
        assert pool.stop() == 0, pool.log()
    finally:
        pool.stop()


def test_compose_file_runs_migrations_first_and_reserves_gpus() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "api", "worker"}
    assert services["migrate"]["command"] == ["hpo", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert "healthcheck" in services[name]
        url = services[name]["environment"]["HPO_DATABASE_URL"]
        assert make_url(url).host == "db"
    assert "healthcheck" in services["db"]
    assert services["api"]["command"][:4] == ["hpo", "serve", "--workers", "0"]
    assert services["worker"]["command"] == ["hpo", "worker", "--gpus", "all"]
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    # docker stop must wait past the workers' stop deadline before SIGKILL.
    deadline = float(services["worker"]["environment"]["HPO_STOP_DEADLINE_SECONDS"])
    assert float(services["worker"]["stop_grace_period"].rstrip("s")) > deadline
    # The commands the images run exist in the CLI.
    from service.cli.main import build_parser

    for name in ("api", "worker", "migrate"):
        args = build_parser().parse_args(services[name]["command"][1:])
        assert callable(args.func)
    args = build_parser().parse_args(services["worker"]["healthcheck"]["test"][2:])
    assert callable(args.func)


def test_compose_file_is_valid() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("docker client without the compose plugin")
    out = subprocess.run(
        [docker, "compose", "-f", str(REPO / "docker" / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
