"""`hpo serve`: the API in this process and N local worker processes beside it.

A worker process that dies is restarted (with back-off if it keeps dying), and its
unfinished trial is failed at once so its slot goes back to the budget. One that exits 0
(stopped, or done with --until-idle / --max-trials) or 130 (stopped by SIGINT) is not
restarted. Each worker runs in its own process group: Ctrl-C in a terminal signals the
supervisor alone, which stops its workers with SIGTERM. `hpo worker --gpus`
uses the same supervisor for its one-process-per-GPU-slot children.

The workers die with the supervisor (`worker/lifeline.py`), even when it is killed with
SIGKILL. Should some survive it anyway (a kernel without the parent-death signal and a
worker stuck in native code, an older version), the next supervisor on the host stops
them before starting its own: the workers table records each worker's pid and process
start time and those of its supervisor, so a worker whose supervisor is gone is found, and
a pid the kernel has since given to another process is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from service.core.processes import process_alive
from service.core.settings import Settings
from service.scheduling.claims import reap_worker
from service.scheduling.workers import local_running_workers, orphaned_local_workers
from service.worker.gpus import Slot
from service.worker.lifeline import Lifeline

log = logging.getLogger("hpo.serve")

STOP_MARGIN_S = 15.0  # past the workers' stop deadline + this, they are killed
RESTART_BACKOFF_MAX_S = 30.0
HEALTHY_RUN_S = 60.0  # a worker that ran this long before dying restarts without back-off
POLL_S = 0.1  # while waiting for workers to exit
# Exit codes of a worker that stopped on purpose, and is not restarted: 0 (SIGTERM, or out
# of work with --until-idle / --max-trials) and 130 (SIGINT: someone Ctrl-C'd or `kill
# -INT`ed it).
STOPPED_CODES = (0, 128 + signal.SIGINT)


def stop_orphaned_workers(settings: Settings) -> int:
    """Stop the workers of this host whose supervisor died before them, and mark their
    records: SIGTERM (their trial may finish within the stop deadline), SIGKILL past the
    deadline and `STOP_MARGIN_S`; records of workers already gone are marked dead and their
    trials failed (and retried) at once. Returns how many worker records were cleaned up.
    Raises SQLAlchemyError when the database cannot be read."""
    url = settings.database_url
    orphans = orphaned_local_workers(url)
    if not orphans:
        return 0
    alive = [w for w in orphans if w.alive]
    log.warning(
        "%d worker(s) left running by a supervisor that is gone (pids %s); stopping them",
        len(orphans),
        ", ".join(str(w.pid) for w in orphans),
    )
    for w in alive:
        _signal_process(w.pid, w.process_start, signal.SIGTERM)
    deadline = time.monotonic() + settings.stop_deadline_seconds + STOP_MARGIN_S
    while any(process_alive(w.pid, w.process_start) for w in alive):
        if time.monotonic() > deadline:
            for w in alive:
                _signal_process(w.pid, w.process_start, signal.SIGKILL)
            break
        time.sleep(POLL_S)
    for w in orphans:
        # A worker that stopped cleanly marked itself stopped; this marks the rest dead.
        reap_worker(url, w.id, f"worker {w.id} outlived its supervisor and was stopped")
    return len(orphans)


def _signal_process(pid: int, start: str, signum: int) -> None:
    """Send `signum` to the process recorded as (`pid`, `start`), and to no other."""
    try:
        # A pidfd names one process, never a later one given the same pid: check the
        # identity through it, then signal through it.
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd here: a (tiny) window remains
        if process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return
    try:
        if process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signum)
    finally:
        os.close(fd)


class LocalWorkers:
    """One worker process per slot (`hpo worker --device D` children), restarted when they
    die, stopped with `stop()`. `hurry` (settable from a signal handler) cuts `stop()`'s
    wait short: the workers still running are killed at once."""

    def __init__(
        self,
        settings: Settings,
        slots: list[Slot] | None = None,
        *,
        studies: list[str] | None = None,
        worker_args: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.slots = slots if slots is not None else [Slot(settings.device)] * settings.workers
        self.studies = studies
        self.worker_args = worker_args or []
        self.done: list[bool] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.failures: list[int] = []
        self.next_start: list[float] = []
        self.started: list[float] = []
        self.stopping = threading.Event()
        self.hurry = False
        self._lifeline: Lifeline | None = None
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)

    def _command(self, slot: Slot) -> list[str]:
        s = self.settings
        cmd = [sys.executable, "-m", "service.cli.main", "worker", "--database-url", s.database_url]
        cmd += ["--log-level", s.log_level, "--stop-deadline", str(s.stop_deadline_seconds)]
        if slot.device:
            cmd += ["--device", slot.device]
        threads = s.torch_threads or max(1, (os.cpu_count() or 1) // max(len(self.slots), 1))
        cmd += ["--threads", str(threads)]
        if self.studies:
            cmd += ["--studies", ",".join(self.studies)]
        return cmd + self.worker_args

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        assert self._lifeline is not None
        slot = self.slots[i]
        return subprocess.Popen(
            self._command(slot),
            env={**os.environ, **slot.env(), **self._lifeline.child_env()},
            pass_fds=self._lifeline.pass_fds,
            # Its own process group: a Ctrl-C in the terminal reaches the supervisor only,
            # which stops its workers with SIGTERM. A worker still importing (or one between
            # the supervisor's signal and its own stop, which a restart could race) would
            # otherwise get the SIGINT too, and print a KeyboardInterrupt traceback.
            process_group=0,
        )

    def start(self) -> None:
        """Stop the workers a dead predecessor left on this host, then start one worker
        process per slot and the thread that restarts them. Raises SQLAlchemyError when
        the database cannot be read."""
        stop_orphaned_workers(self.settings)
        self._lifeline = Lifeline()
        for i in range(len(self.slots)):
            self.procs.append(self._spawn(i))
            self.done.append(False)
            self.failures.append(0)
            self.next_start.append(0.0)
            self.started.append(time.monotonic())
        self._thread.start()

    def _reap(self, pid: int, code: int) -> None:
        try:
            for worker_id in local_running_workers(self.settings.database_url, pid):
                reap_worker(
                    self.settings.database_url,
                    worker_id,
                    f"worker process {pid} exited with code {code}",
                )
        except SQLAlchemyError:
            log.exception("could not clean up after worker pid %d", pid)

    def _supervise(self) -> None:
        while not self.stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                code = proc.poll()
                if code is None or self.stopping.is_set() or self.done[i]:
                    continue
                if code in STOPPED_CODES:  # stopped on purpose, or out of work
                    self.done[i] = True
                    if code != 0:  # its stop may have cut its start short: tidy up
                        self._reap(proc.pid, code)
                    continue
                now = time.monotonic()
                if self.next_start[i] == 0.0:
                    log.warning("worker pid %d exited with code %s; restarting", proc.pid, code)
                    self._reap(proc.pid, code)
                    if now - self.started[i] > HEALTHY_RUN_S:
                        self.failures[i] = 0
                    self.failures[i] += 1
                    delay = min(2.0 ** (self.failures[i] - 1), RESTART_BACKOFF_MAX_S)
                    self.next_start[i] = now + delay
                if now >= self.next_start[i]:
                    self.procs[i] = self._spawn(i)
                    self.next_start[i] = 0.0
                    self.started[i] = now

    def stop(self) -> None:
        """SIGTERM every worker and wait for them: each may finish its trial within the
        stop deadline; past it and `STOP_MARGIN_S` (or at once with `hurry`), the rest are
        killed and their trials failed."""
        self.stopping.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_deadline_seconds + STOP_MARGIN_S
        while any(p.poll() is None for p in self.procs):
            if self.hurry or time.monotonic() > deadline:
                why = "asked again to stop" if self.hurry else "did not stop in time"
                for proc in self.procs:
                    if proc.poll() is None:
                        log.warning("worker pid %d %s; killing it", proc.pid, why)
                        proc.kill()
                        proc.wait()
                        self._reap(proc.pid, -9)
                break
            time.sleep(POLL_S)

    def all_done(self) -> bool:
        """Every worker exited 0 (stopped, or done with --until-idle / --max-trials) or
        130 (stopped by SIGINT)."""
        return all(self.done) and all(p.poll() is not None for p in self.procs)
