"""The mechanisms that keep local workers from outliving their supervisor, with real
processes but no torch (the end-to-end cases with `hpo serve` are in test_workers_e2e.py):

- each of the two lifelines alone (the pipe; the parent-death signal) stops a child when
  its supervisor is SIGKILLed;
- a new supervisor's sweep stops the workers a dead supervisor left, and never signals a
  pid the kernel gave to another process since (pid + start time, not the pid alone).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.migrate import upgrade
from service.core.db.models import Worker, utcnow
from service.core.processes import machine_scope, process_alive, process_start
from service.core.settings import Settings
from service.worker.supervisor import stop_orphaned_workers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CHILD = """
import os, signal, sys, time
from service.worker.lifeline import hold_on
def on_term(*_):
    open(sys.argv[1], "w").write("SIGTERM")
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
hold_on()
open(sys.argv[1] + ".ready", "w").write(str(os.getpid()))
time.sleep(120)
"""

# A supervisor that starts CHILD with one lifeline only: "pipe" (no supervisor identity, so
# no parent-death signal) or "pdeathsig" (no pipe).
SUPERVISOR = """
import os, subprocess, sys, time
from service.worker.lifeline import Lifeline
line = Lifeline()
env = dict(os.environ)
if sys.argv[2] == "pipe":
    env["HPO_LIFELINE_FD"] = str(line.read_fd)
    fds = line.pass_fds
else:
    env["HPO_SUPERVISOR"] = line.identity
    fds = ()
subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[1]], env=env, pass_fds=fds)
time.sleep(120)
"""


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("lifeline", ["pipe", "pdeathsig"])
def test_a_worker_gets_sigterm_when_its_supervisor_is_killed(tmp_path: Path, lifeline: str) -> None:
    marker = tmp_path / "child"
    ready = tmp_path / "child.ready"
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(marker), lifeline, CHILD],
        env={k: v for k, v in os.environ.items() if not k.startswith("HPO_")},
    )
    try:
        wait_until(ready.exists, "the child to hold on")
        wait_until(lambda: ready.read_text() != "", "the child's pid")
        child = int(ready.read_text())
        start = process_start(child)
        supervisor.kill()
        supervisor.wait()
        wait_until(lambda: not process_alive(child, start), "the child to exit", timeout=30)
        assert marker.read_text() == "SIGTERM"
    finally:
        supervisor.kill()
        supervisor.wait()


@pytest.fixture
def migrated(empty_database_url: str) -> str:
    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def sleepers() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "300"])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def add_worker(url: str, pid: int, start: str | None, supervisor: tuple[int, str] | None) -> int:
    with session_scope(url) as session:
        worker = Worker(
            host=socket.gethostname(),
            pid=pid,
            process_start=start,
            supervisor_pid=supervisor[0] if supervisor else None,
            supervisor_start=supervisor[1] if supervisor else None,
            device="cpu",
            version="test",
            status="running",
            started_at=utcnow(),
            heartbeat_at=utcnow(),
        )
        session.add(worker)
        session.flush()
        return worker.id


def test_a_new_supervisor_stops_what_a_dead_one_left_and_nothing_else(
    migrated: str, sleepers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    dead = sleepers()
    dead_start, my_start = process_start(dead.pid), process_start(os.getpid())
    assert dead_start is not None and my_start is not None
    dead.kill()
    dead.wait()
    dead_supervisor, me = (dead.pid, dead_start), (os.getpid(), my_start)
    assert not process_alive(*dead_supervisor)

    orphan, recycled, supervised, standalone = sleepers(), sleepers(), sleepers(), sleepers()
    ids = {
        # left by the dead supervisor, still running: stopped
        "orphan": add_worker(migrated, orphan.pid, process_start(orphan.pid), dead_supervisor),
        # its recorded process is gone and the pid now names another process: the record is
        # closed, the process that has the pid now is left alone
        "recycled": add_worker(migrated, recycled.pid, f"1@{machine_scope()}", dead_supervisor),
        # a live supervisor's worker
        "supervised": add_worker(migrated, supervised.pid, process_start(supervised.pid), me),
        # no supervisor: `hpo worker` started by hand
        "standalone": add_worker(migrated, standalone.pid, process_start(standalone.pid), None),
        # recorded in another boot or pid namespace: not judged from here
        "elsewhere": add_worker(migrated, orphan.pid, "1@another-boot/pid:[1]", dead_supervisor),
    }
    settings = Settings(database_url=migrated, stop_deadline_seconds=5)

    assert stop_orphaned_workers(settings) == 2
    assert orphan.wait(timeout=30) == -signal.SIGTERM
    for alive in (recycled, supervised, standalone):
        assert alive.poll() is None
    with session_scope(migrated) as session:
        status = {i: s for i, s in session.execute(select(Worker.id, Worker.status))}
    assert {name: status[i] for name, i in ids.items()} == {
        "orphan": "dead",  # a sleep does not record its stop; a worker marks itself stopped
        "recycled": "dead",
        "supervised": "running",
        "standalone": "running",
        "elsewhere": "running",
    }
    assert stop_orphaned_workers(settings) == 0  # nothing left to do
