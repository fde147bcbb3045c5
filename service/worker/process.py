"""The worker process: claims trials, trains them with the trainer, reports, heartbeats.

One worker trains one trial at a time on one device. It survives database outages (its
writes wait and retry with back-off) and failing trials (the trial ends FAIL with its error;
the worker goes on; out of GPU memory, the trial is re-run once with half the batch size).
SIGTERM/SIGINT: it takes no new trial; the current one may finish within the stop deadline,
past it the trial is interrupted, even mid-epoch, failed, and enqueued again with the same
parameters; the worker marks itself stopped and exits 0.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

import optuna
import torch
from optuna.trial import TrialState, create_trial
from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service import __version__
from service.analysis import learning_curves
from service.analysis.diagnoses import PRUNED_BY_DIAGNOSIS, record_diagnosis
from service.core.db.engine import session_scope
from service.core.db.models import CurvePoint, TrialRecord, Worker, utcnow
from service.core.db.retry import retry_db
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.datasets.spec import DatasetSpec
from service.datasets.splits import load_uploaded_splits, uploaded_dataset_hash
from service.scheduling.claims import (
    Claim,
    attach_trial,
    candidate_studies,
    claim_slot,
    expire_deadlines,
    fail_orphans,
    finish_record,
    reap_dead_workers,
)
from service.studies.model_families import builder_for
from service.studies.search.factories import build_pruner, build_sampler
from service.studies.search.space import suggest_params
from service.studies.service import get_study_row
from service.studies.spec import StudySpec
from service.trials.artifacts import save_trial_model
from service.trials.transfer import prepare_from
from service.trials.warnings import record_warnings
from service.worker.gpus import gpu_info
from trainer import (
    DivergedError,
    EpochMetrics,
    FitResult,
    TensorData,
    TrainConfig,
    evaluate,
    fit,
    load_dataset,
)
from trainer.diagnosis import EarlyVerdict
from trainer.loop import ModelBuilder, PrepareModel

log = logging.getLogger("hpo.worker")

MAX_BACKOFF_S = 30.0  # longest wait between retries while the database is unreachable
DATA_CACHE_SIZE = 4  # datasets kept on the device per worker process
REAP_EVERY_S = 10.0  # how often a worker looks for dead peers
HARD_EXIT_MARGIN_S = 10.0  # past the stop deadline + this, the process cleans up and exits

T = TypeVar("T")


class Interrupted(Exception):
    """The worker was asked to stop while a trial was running."""


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class WorkerProcess:
    def __init__(self, settings: Settings, studies: list[str] | None = None) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.device = pick_device(settings.device)
        self.only = studies  # study names (or ids) this worker takes trials of; None: all
        self.stopping = threading.Event()
        self.worker_id: int | None = None
        self._data: dict[str, TensorData] = {}
        self._last_reap = 0.0
        # Set when a trial's end could not be recorded; its record is failed once the
        # database is back.
        self._lost_trial = False
        # True while fit() runs: only then may the stop deadline interrupt the trial.
        self._training = False
        self._signals = False
        self._signalled = 0  # the signal number, set by the handler
        self._stop_requested = False
        self._done = threading.Event()  # run() finished its clean-up

    def _db(self, fn: Callable[[], T], what: str) -> T:
        return retry_db(fn, what)

    # -- lifecycle ----------------------------------------------------------------------

    def register(self) -> int:
        now = utcnow()
        gpu_name, gpu_memory_mb = gpu_info(self.device)
        with session_scope(self.url) as session:
            worker = Worker(
                host=socket.gethostname(),
                pid=os.getpid(),
                device=self.device,
                gpu_name=gpu_name,
                gpu_memory_mb=gpu_memory_mb,
                version=__version__,
                status="running",
                started_at=now,
                heartbeat_at=now,
            )
            session.add(worker)
            session.flush()
            return worker.id

    def _set_worker(self, **values: object) -> None:
        with session_scope(self.url) as session:
            session.execute(update(Worker).where(Worker.id == self.worker_id).values(**values))

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.settings.heartbeat_seconds):
            try:
                # status too: a worker declared dead during a long outage is alive again.
                self._set_worker(heartbeat_at=utcnow(), status="running")
            except Exception as e:  # the database is down: try again next beat
                log.warning("heartbeat failed: %s", e.__class__.__name__)

    # -- stopping -----------------------------------------------------------------------

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

    def request_stop(self) -> None:
        """Take no new trial; past the stop deadline (armed by the signal) the current one
        is interrupted."""
        self.stopping.set()
        if self._stop_requested:
            return
        self._stop_requested = True
        if self._signals:
            threading.Thread(target=self._last_resort, name="stop-watchdog", daemon=True).start()

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
            fail_orphans(self.url, self.worker_id, "the worker was stopped and its trial hung")
            self._set_worker(status="stopped", current_trial_id=None, heartbeat_at=utcnow())
        finally:
            os._exit(0)

    def run(
        self,
        max_trials: int | None = None,
        *,
        until_idle: bool = False,
        install_signals: bool = True,
    ) -> int:
        """Run until stopped, `max_trials` trials ran, or (`until_idle`) no study has budget
        left; returns the exit code."""
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        if install_signals:
            self._signals = True
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGALRM, self._on_deadline)
            threading.Thread(target=self._relay_signals, name="signals", daemon=True).start()
        self.worker_id = self._db(self.register, "register")
        log.info("worker %s started on %s (pid %d)", self.worker_id, self.device, os.getpid())
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        ran = 0
        backoff = self.settings.worker_poll_seconds
        while not self.stopping.is_set() and (max_trials is None or ran < max_trials):
            try:
                # Learning-curve jobs (service.analysis.learning_curves) before new trials.
                if learning_curves.run_next_job(
                    self.url, self.worker_id, self.data_for, self.stopping
                ):
                    continue
                if until_idle and not self._has_work():
                    break
                claim = self._next_claim()
                backoff = self.settings.worker_poll_seconds
            except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                log.warning("database unavailable (%s); retrying in %.0fs", e, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if claim is None:
                self.stopping.wait(self.settings.worker_poll_seconds)
                continue
            try:
                self.run_trial(claim)
            except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                # The trial's end could not be recorded; _next_claim fails it once the
                # database is back, which gives its slot back.
                self._lost_trial = True
                log.warning("database unavailable during a trial (%s)", e)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            ran += 1
        self.stopping.set()
        if self._signals:
            signal.setitimer(signal.ITIMER_REAL, 0)
        beat.join()
        try:
            # A trial whose end was lost to the database must not stay RUNNING.
            fail_orphans(self.url, self.worker_id, "the worker stopped during a database outage")
            self._set_worker(status="stopped", current_trial_id=None, heartbeat_at=utcnow())
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            # Peers mark it dead after the grace period and fail what it left.
            log.warning("could not record the stop: %s", e.__class__.__name__)
        self._done.set()
        log.info("worker %s stopped", self.worker_id)
        return 0

    def _has_work(self) -> bool:
        return bool(candidate_studies(self.url, self.only))

    def _next_claim(self) -> Claim | None:
        assert self.worker_id is not None
        if self._lost_trial:
            fail_orphans(self.url, self.worker_id, "the worker lost the database during the trial")
            self._lost_trial = False
        if time.monotonic() - self._last_reap > REAP_EVERY_S:
            self._last_reap = time.monotonic()
            reap_dead_workers(self.url, self.settings.worker_grace_seconds)
            expire_deadlines(self.url)
        for study_id in candidate_studies(self.url, self.only):
            claim = claim_slot(self.url, study_id, self.worker_id)
            if claim is not None:
                return claim
        return None

    # -- one trial ----------------------------------------------------------------------

    def data_for(self, ds: DatasetSpec) -> TensorData:
        key = json.dumps(ds.model_dump(), sort_keys=True)
        uploaded = uploaded_dataset_hash(self.url, ds)  # None for a built-in dataset
        key += uploaded or ""
        if key not in self._data:
            if len(self._data) >= DATA_CACHE_SIZE:
                self._data.pop(next(iter(self._data)))
            if uploaded is not None:
                splits = load_uploaded_splits(self.url, uploaded, ds, self.settings.data_dir)
            else:
                splits = load_dataset(
                    ds.name,
                    val_fraction=ds.val_fraction,
                    test_fraction=ds.test_fraction,
                    seed=ds.seed,
                    n_samples=ds.n_samples,
                    noise=ds.noise,
                    shape=ds.shape,
                    path=ds.path,
                    download=ds.download,
                )
            self._data[key] = TensorData.from_splits(splits, self.device)
        return self._data[key]

    def _start_trial(self, claim: Claim, spec: StudySpec, study: optuna.Study) -> optuna.Trial:
        if claim.fixed_params:
            # Created RUNNING directly (not WAITING + pop) so no other worker can take it.
            template = create_trial(
                state=TrialState.RUNNING, system_attrs={"fixed_params": claim.fixed_params}
            )
            trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
            return optuna.Trial(study, trial_id)
        return study.ask()

    def run_trial(self, claim: Claim) -> None:
        try:
            with session_scope(self.url) as session:
                row = get_study_row(session, claim.study_id)
            spec = StudySpec.model_validate(row.spec)
            study = optuna.load_study(
                study_name=f"hpo:{spec.name}",
                storage=get_storage(self.url),
                sampler=build_sampler(spec, claim.claim_index),
                pruner=build_pruner(spec.pruner, spec.objective.max_epochs),
            )
            trial = self._start_trial(claim, spec, study)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
            raise  # the run loop backs off; the claim is failed once the database is back
        except Exception as e:
            log.exception("could not start a trial for study %s", claim.study_id)
            finish_record(self.url, claim.record_id, "fail", error=f"{type(e).__name__}: {e}")
            return
        trial_id = trial._trial_id
        attached = self._db(
            lambda: attach_trial(self.url, claim.record_id, trial_id, trial.number), "attach"
        )
        if not attached:
            # Declared dead (e.g. starved of CPU past the grace period) before the link
            # existed: the slot went back, so training this trial would overshoot the budget.
            log.warning(
                "study %s: claim %d was reaped; not training it", spec.name, claim.record_id
            )
            self._db(
                lambda: study.tell(trial, state=TrialState.FAIL, skip_if_finished=True), "tell"
            )
            return
        self._db(lambda: self._set_worker(current_trial_id=trial_id), "current trial")
        log.info("study %s: trial %d started", spec.name, trial.number)
        try:
            state, value, test_acc = self._train(trial, spec, claim)
            told = None if state != TrialState.COMPLETE else value
            # skip_if_finished: a retry after a lost connection may find it already told.
            self._db(lambda: study.tell(trial, told, state=state, skip_if_finished=True), "tell")
            self._db(
                lambda: finish_record(
                    self.url, claim.record_id, state.name.lower(), test_accuracy=test_acc
                ),
                "finish",
            )
            log.info("study %s: trial %d %s %s", spec.name, trial.number, state.name, value)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            quiet = Interrupted | DivergedError | ValueError | torch.cuda.OutOfMemoryError
            if not isinstance(e, quiet):
                log.exception("study %s: trial %d failed", spec.name, trial.number)
            # A trial interrupted by a stop was not at fault: it runs again, same parameters.
            retry_params = trial.params if isinstance(e, Interrupted) else None
            try:
                self._db(
                    lambda: study.tell(trial, state=TrialState.FAIL, skip_if_finished=True), "tell"
                )
            except Exception:
                log.exception("could not mark trial %d failed in Optuna", trial.number)
            self._db(
                lambda: finish_record(
                    self.url, claim.record_id, "fail", error=reason, retry_params=retry_params
                ),
                "finish",
            )
        finally:
            record_diagnosis(self.url, trial_id)  # findings of the ended trial; never raises
            try:
                self._set_worker(current_trial_id=None)
            except SQLAlchemyError as e:
                log.warning("could not clear the current trial: %s", type(e).__name__)
            self._free_gpu_memory()

    def _free_gpu_memory(self) -> None:
        if self.device.startswith("cuda"):
            gc.collect()  # tensors held by reference cycles (e.g. a traceback's frames)
            torch.cuda.empty_cache()

    def _fit(
        self,
        config: TrainConfig,
        data: TensorData,
        on_epoch: Callable[[EpochMetrics], bool],
        prepare: PrepareModel | None = None,
        builder: ModelBuilder | None = None,
    ) -> FitResult:
        self._training = True  # from here the stop deadline may interrupt the trial
        try:
            if builder is None:  # a shipped family: the trainer builds it
                return fit(config, data, on_epoch, prepare_model=prepare)
            return fit(config, data, on_epoch, prepare_model=prepare, model_builder=builder)
        finally:
            self._training = False

    def _fit_with_oom_retry(
        self,
        trial: optuna.Trial,
        claim: Claim,
        config: TrainConfig,
        data: TensorData,
        on_epoch: Callable[[EpochMetrics], bool],
        prepare: PrepareModel | None = None,
        builder: ModelBuilder | None = None,
    ) -> FitResult:
        """Out of GPU memory: release it and train once more with half the batch size,
        recorded on the trial (hpo_trials.oom_batch_size, Optuna user attr)."""
        try:
            return self._fit(config, data, on_epoch, prepare, builder)
        except torch.cuda.OutOfMemoryError as e:
            first = str(e).splitlines()[0] if str(e) else "out of memory"
        # Outside the except block: the traceback's frames (and their tensors) are gone.
        self._free_gpu_memory()
        half = config.batch_size // 2
        if half < 1:
            raise torch.cuda.OutOfMemoryError(f"{first} (batch_size 1)")
        log.warning("trial %d: out of GPU memory; again with batch_size %d", trial.number, half)
        trial_id = trial._trial_id

        def record() -> None:
            with session_scope(self.url) as session:
                session.execute(
                    update(TrialRecord)
                    .where(TrialRecord.id == claim.record_id)
                    .values(oom_batch_size=half)
                )
                # The partial curves of the first attempt would clash with the re-run's.
                session.execute(delete(CurvePoint).where(CurvePoint.trial_id == trial_id))
            trial.set_user_attr("oom_batch_size", half)

        self._db(record, "record OOM")
        try:
            half_config = dataclasses.replace(config, batch_size=half)
            return self._fit(half_config, data, on_epoch, prepare, builder)
        except torch.cuda.OutOfMemoryError as e:
            raise torch.cuda.OutOfMemoryError(
                f"{str(e).splitlines()[0] if str(e) else 'out of memory'} (also with "
                f"batch_size {half}, half of {config.batch_size})"
            ) from None

    def _train(
        self, trial: optuna.Trial, spec: StudySpec, claim: Claim
    ) -> tuple[TrialState, float | None, float | None]:
        params = suggest_params(trial, spec)
        metric = spec.objective.metric
        config = TrainConfig.from_params(
            params,
            max_epochs=spec.objective.max_epochs,
            seed=trial.number,
            monitor=metric,
            family=spec.model.family,
        )
        data = self.data_for(spec.dataset)
        trial_id = trial._trial_id
        record_warnings(self.url, trial_id, config)
        prepare = None if spec.init_from is None else prepare_from(self.url, spec.init_from)
        # Stops hopeless trials: confidently diverged, or vanishing gradients and not learning.
        verdict = EarlyVerdict(n_classes=data.n_classes)
        reported: set[int] = set()

        def write_curves(m: EpochMetrics) -> None:
            attempts = 0

            def insert_points() -> None:
                nonlocal attempts
                attempts += 1
                try:
                    with session_scope(self.url) as session:
                        session.execute(
                            insert(CurvePoint),
                            [
                                {"trial_id": trial_id, "step": m.epoch, "metric": k, "value": v}
                                for k, v in m.values.items()
                            ],
                        )
                except IntegrityError:
                    if attempts == 1:
                        raise
                    # An earlier attempt committed, then lost its connection before the reply.

            self._db(insert_points, "curve points")

        def on_epoch(m: EpochMetrics) -> bool:
            # One write per epoch: every curve point of this epoch in one statement.
            write_curves(m)
            if m.epoch not in reported:  # a re-run after OOM repeats reported epochs
                self._db(lambda: trial.report(m.values[metric], m.epoch), "report")
                reported.add(m.epoch)
            if (reason := verdict.update(m.values)) is not None:
                self._db(lambda: trial.set_user_attr(PRUNED_BY_DIAGNOSIS, reason), "verdict")
                return True
            return self._db(trial.should_prune, "should_prune")

        builder = builder_for(spec.model.family)
        result = self._fit_with_oom_retry(trial, claim, config, data, on_epoch, prepare, builder)
        save_trial_model(self.url, trial_id, result, config, spec, data)
        test_acc = None
        if data.x_test.shape[0] > 0:
            test_acc = evaluate(result.model, data.x_test, data.y_test)[1]
        if result.stopped_by_callback:
            return TrialState.PRUNED, None, test_acc
        # Under early stopping the model (and so the value) is the best epoch's.
        # Under early stopping the model (and so the value) is the best epoch's.
        return TrialState.COMPLETE, result.value(metric), test_acc
