"""The worker process: claims trials, trains them with the trainer, reports, heartbeats.

One worker trains one trial at a time on one device. It survives database outages (its
writes wait and retry with back-off) and failing trials (the trial ends FAIL with its error;
the worker goes on; out of GPU memory, the trial is re-run once with half the batch size).
SIGTERM/SIGINT: it takes no new trial; the current one may finish within the stop deadline,
past it the trial is interrupted, even mid-epoch, failed, and enqueued again with the same
parameters; the worker marks itself stopped and exits 0 after SIGTERM, 130 after SIGINT
(Ctrl-C, as a shell reports a command it stopped, and as `hpo serve` does).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType

import torch

from service.analysis import learning_curves
from service.core.db.retry import retry_db
from service.core.settings import Settings
from service.datasets.locations import DataPlaces
from service.integrations.dispatch import Dispatcher
from service.scheduling.claims import Claim, candidate_studies, claim_pack, fail_orphans
from service.scheduling.orphans import sweep
from service.scheduling.workers import heartbeat, record_stop, register_worker
from service.worker.data import DatasetCache
from service.worker.device_stats import device_sample
from service.worker.faults import crash_point
from service.worker.gpus import gpu_info
from service.worker.pack import PackRunner
from service.worker.trial import STORAGE_ERRORS, Interrupted, TrialRunner

log = logging.getLogger("hpo.worker")

MAX_BACKOFF_S = 30.0  # longest wait between retries while the database is unreachable
SWEEP_EVERY_S = 10.0  # how often a worker looks for dead peers and orphaned trials
HARD_EXIT_MARGIN_S = 10.0  # past the stop deadline + this, the process cleans up and exits


def pick_device(requested: str | None) -> str:
    """`requested` if given, else the first CUDA device when there is one, else the CPU."""
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class WorkerProcess:
    """One worker: registers, heartbeats, claims trials of `studies` (names or ids; None:
    all) and runs them one at a time on its device until stopped."""

    def __init__(self, settings: Settings, studies: list[str] | None = None) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.device = pick_device(settings.device)
        self.only = studies  # study names (or ids) this worker takes trials of; None: all
        self.stopping = threading.Event()
        self.worker_id: int | None = None
        self.data = DatasetCache(self.url, self.device, DataPlaces.of(settings))
        self._last_sweep: float | None = None  # monotonic time of the last sweep
        # Set when a trial's end could not be recorded; its record is failed once the
        # database is back.
        self._lost_trial = False
        # True while fit() runs: only then may the stop deadline interrupt the trial.
        self._training = False
        self._signals = False
        self._signalled = 0  # the signal number, set by the handler
        self._stop_requested = False
        self._done = threading.Event()  # run() finished its clean-up
        self._outbox: Dispatcher | None = None  # sends webhooks and MLflow runs

    # -- lifecycle ----------------------------------------------------------------------

    def run(
        self,
        max_trials: int | None = None,
        *,
        until_idle: bool = False,
        install_signals: bool = True,
    ) -> int:
        """Run until stopped, `max_trials` trials ran, or (`until_idle`) no study has budget
        left; returns the exit code: 130 when a SIGINT stopped it, else 0."""
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        if install_signals:
            self._install_signals()
        gpu_name, gpu_memory_mb = gpu_info(self.device)
        register = partial(
            register_worker,
            self.url,
            device=self.device,
            gpu_name=gpu_name,
            gpu_memory_mb=gpu_memory_mb,
        )
        self.worker_id = worker_id = retry_db(register, "register")
        log.info("worker %s started on %s (pid %d)", worker_id, self.device, os.getpid())
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        self._outbox = Dispatcher(self.url).start()
        trials = TrialRunner(self.url, worker_id, self.device, self.data, self._interruptible)
        ran = 0
        backoff = self.settings.worker_poll_seconds
        while not self.stopping.is_set() and (max_trials is None or ran < max_trials):
            try:
                self._sweep_if_due()
                # Learning-curve jobs (service.analysis.learning_curves) before new trials.
                if learning_curves.run_next_job(
                    self.url, self.worker_id, self.data.get, self.stopping, self.only
                ):
                    continue
                if until_idle and not candidate_studies(self.url, self.only):
                    break
                claims = self._next_claims(worker_id)
                backoff = self.settings.worker_poll_seconds
            except STORAGE_ERRORS as e:
                log.warning("database unavailable (%s); retrying in %.0fs", e, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if not claims:
                self.stopping.wait(self.settings.worker_poll_seconds)
                continue
            try:
                if len(claims) == 1:
                    trials.run(claims[0])
                else:  # a pack (the spec's `fuse`): compatible trials train fused
                    PackRunner(trials).run(claims)
            except STORAGE_ERRORS as e:
                # The trial's end could not be recorded; _next_claim fails it once the
                # database is back, which gives its slot back.
                self._lost_trial = True
                log.warning("database unavailable during a trial (%s)", e)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            ran += len(claims)
        self._shut_down(worker_id, beat)
        return self.exit_code()

    def _shut_down(self, worker_id: int, beat: threading.Thread) -> None:
        self.stopping.set()
        if self._signals:
            signal.setitimer(signal.ITIMER_REAL, 0)
        beat.join()
        if self._outbox is not None:
            self._outbox.stop()  # sends what falls due within HPO_OUTBOX_FLUSH_SECONDS
        try:
            # A trial whose end was lost to the database must not stay RUNNING.
            record_stop(self.url, worker_id, "the worker stopped during a database outage")
        except STORAGE_ERRORS as e:
            # Peers mark it dead after the grace period and fail what it left.
            log.warning("could not record the stop: %s", e.__class__.__name__)
        self._done.set()
        log.info("worker %s stopped", worker_id)

    def _heartbeat_loop(self) -> None:
        assert self.worker_id is not None
        while not self.stopping.wait(self.settings.heartbeat_seconds):
            try:
                heartbeat(self.url, self.worker_id, device_sample(self.device))
            except Exception as e:  # the database is down: try again next beat
                log.warning("heartbeat failed: %s", e.__class__.__name__)

    def _sweep_if_due(self) -> None:
        """Every SWEEP_EVERY_S (and first over every study, when the worker starts): reap
        silent peers, expire deadlines, close orphaned Optuna trials."""
        now = time.monotonic()
        if self._last_sweep is not None and now - self._last_sweep < SWEEP_EVERY_S:
            return
        first = self._last_sweep is None
        sweep(self.url, self.settings.worker_grace_seconds, every_study=first)
        self._last_sweep = now

    def _next_claims(self, worker_id: int) -> list[Claim]:
        """The next study's claims: one, or up to its `fuse.max_trials` (a pack)."""
        if self._lost_trial:
            fail_orphans(self.url, worker_id, "the worker lost the database during the trial")
            self._lost_trial = False
        for study_id in candidate_studies(self.url, self.only):
            claims = claim_pack(self.url, study_id, worker_id)
            if claims:
                crash_point("after_claim")
                return claims
        return []

    # -- stopping -----------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._signals = True
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_deadline)
        threading.Thread(target=self._relay_signals, name="signals", daemon=True).start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes, possibly while it holds a lock
        # (an Event's, inside `stopping.wait`): taking that lock here would deadlock, so
        # this only records the signal and arms the deadline; the relay thread does the rest.
        if not self._signalled:
            self._signalled = signum
            # SIGALRM is delivered to the main thread, the one that trains.
            deadline = self.settings.stop_deadline_seconds
            signal.setitimer(signal.ITIMER_REAL, max(deadline, 0.001))

    def _relay_signals(self) -> None:
        while not self._done.wait(0.1):
            if self._signalled:
                log.info(
                    "worker %s: signal %d; no new trials, the current one gets %.0fs to finish",
                    self.worker_id,
                    self._signalled,
                    self.settings.stop_deadline_seconds,
                )
                self.request_stop()
                return

    def exit_code(self) -> int:
        """The process's exit status once stopped: 130 (128 + SIGINT) when Ctrl-C stopped
        it, else 0 (SIGTERM, a stop request, or done)."""
        return 128 + signal.SIGINT if self._signalled == signal.SIGINT else 0

    def request_stop(self) -> None:
        """Take no new trial; past the stop deadline (armed by the signal) the current one
        is interrupted."""
        self.stopping.set()
        if self._stop_requested:
            return
        self._stop_requested = True
        if self._signals:
            threading.Thread(target=self._last_resort, name="stop-watchdog", daemon=True).start()

    @contextmanager
    def _interruptible(self) -> Iterator[None]:
        """The window (fit() running) in which the stop deadline interrupts the trial."""
        self._training = True
        try:
            yield
        finally:
            self._training = False

    def _on_deadline(self, _signum: int, _frame: FrameType | None) -> None:
        if self._training:
            raise Interrupted(
                f"the worker was stopped and the trial did not finish within the stop "
                f"deadline ({self.settings.stop_deadline_seconds:g}s); it will run again"
            )

    def _last_resort(self) -> None:
        """If training is stuck in native code past the deadline, fail the trial from this
        thread and leave: the stop must not depend on the trial's cooperation."""
        if self._done.wait(self.settings.stop_deadline_seconds + HARD_EXIT_MARGIN_S):
            return
        log.error("worker %s: did not stop in time; failing its trial and exiting", self.worker_id)
        try:
            assert self.worker_id is not None
            record_stop(self.url, self.worker_id, "the worker was stopped and its trial hung")
        finally:
            os._exit(self.exit_code())
