"""`hpo serve`: the API in this process and N local worker processes beside it.

A worker process that dies is restarted (with back-off if it keeps dying), and its
unfinished trial is failed at once so its slot goes back to the budget. One that exits 0
(stopped, or done with --until-idle / --max-trials) is not restarted. `hpo worker --gpus`
uses the same supervisor for its one-process-per-GPU-slot children.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from service.core.settings import Settings
from service.scheduling.claims import reap_worker
from service.scheduling.workers import local_running_workers
from service.worker.gpus import Slot

log = logging.getLogger("hpo.serve")

STOP_MARGIN_S = 15.0  # past the workers' stop deadline + this, they are killed
RESTART_BACKOFF_MAX_S = 30.0
HEALTHY_RUN_S = 60.0  # a worker that ran this long before dying restarts without back-off


class LocalWorkers:
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
        slot = self.slots[i]
        return subprocess.Popen(self._command(slot), env={**os.environ, **slot.env()})

    def start(self) -> None:
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
                if code == 0:  # stopped on purpose, or out of work with --until-idle
                    self.done[i] = True
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
        self.stopping.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_deadline_seconds + STOP_MARGIN_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
                self._reap(proc.pid, -9)

    def all_done(self) -> bool:
        return all(self.done) and all(p.poll() is not None for p in self.procs)
