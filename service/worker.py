"""The worker process: claims trials, trains them with the trainer, reports, heartbeats.

One worker trains one trial at a time on one device. It survives database outages (it
backs off and retries) and failing trials (the trial ends FAIL with its error; the worker
goes on). SIGTERM/SIGINT stop it at the next epoch boundary: the current trial is failed
with a reason, its slot given back so another worker runs it, and the worker exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

import optuna
import torch
from optuna.trial import TrialState, create_trial
from sqlalchemy import insert, update
from sqlalchemy.exc import SQLAlchemyError

from service import __version__, learning_curves
from service.artifacts import save_trial_model
from service.claims import (
    Claim,
    attach_trial,
    candidate_studies,
    claim_slot,
    expire_deadlines,
    fail_orphans,
    finish_record,
    reap_dead_workers,
)
from service.db.engine import session_scope
from service.db.models import CurvePoint, Worker, utcnow
from service.diagnoses import PRUNED_BY_DIAGNOSIS, record_diagnosis
from service.model_families import builder_for
from service.optuna_storage import get_storage
from service.schemas import DatasetSpec, StudySpec
from service.search.factories import build_pruner, build_sampler
from service.search.space import suggest_params
from service.settings import Settings
from service.studies import get_study_row
from service.transfer import prepare_from
from service.trial_warnings import record_warnings
from service.uploaded_data import load_uploaded_splits, uploaded_dataset_hash
from trainer import (
    DivergedError,
    EpochMetrics,
    TensorData,
    TrainConfig,
    evaluate,
    fit,
    load_dataset,
)
from trainer.diagnosis import EarlyVerdict

log = logging.getLogger("hpo.worker")

MAX_BACKOFF_S = 30.0  # longest wait between retries while the database is unreachable
DATA_CACHE_SIZE = 4  # datasets kept on the device per worker process
REAP_EVERY_S = 10.0  # how often a worker looks for dead peers


class Interrupted(Exception):
    """The worker was asked to stop while a trial was running."""


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class WorkerProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.device = pick_device(settings.device)
        self.stopping = threading.Event()
        self.worker_id: int | None = None
        self._data: dict[str, TensorData] = {}
        self._last_reap = 0.0
        # Set when a trial's end could not be recorded; its record is failed once the
        # database is back.
        self._lost_trial = False

    # -- lifecycle ----------------------------------------------------------------------

    def register(self) -> int:
        now = utcnow()
        with session_scope(self.url) as session:
            worker = Worker(
                host=socket.gethostname(),
                pid=os.getpid(),
                device=self.device,
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
            except SQLAlchemyError as e:  # the database is down: try again next beat
                log.warning("heartbeat failed: %s", e.__class__.__name__)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("worker %s: signal %d, stopping after the current epoch", self.worker_id, signum)
        self.stopping.set()

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
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.worker_id = self.register()
        log.info("worker %s started on %s (pid %d)", self.worker_id, self.device, os.getpid())
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        ran = 0
        backoff = self.settings.worker_poll_seconds
        while not self.stopping.is_set() and (max_trials is None or ran < max_trials):
            try:
                # Learning-curve jobs (service.learning_curves) before new trials.
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
        beat.join()
        try:
            self._set_worker(status="stopped", current_trial_id=None, heartbeat_at=utcnow())
        except SQLAlchemyError as e:  # peers will mark it dead after the grace period
            log.warning("could not record the stop: %s", e.__class__.__name__)
        log.info("worker %s stopped", self.worker_id)
        return 0

    def _has_work(self) -> bool:
        return bool(candidate_studies(self.url))

    def _next_claim(self) -> Claim | None:
        assert self.worker_id is not None
        if self._lost_trial:
            fail_orphans(self.url, self.worker_id, "the worker lost the database during the trial")
            self._lost_trial = False
        if time.monotonic() - self._last_reap > REAP_EVERY_S:
            self._last_reap = time.monotonic()
            reap_dead_workers(self.url, self.settings.worker_grace_seconds)
            expire_deadlines(self.url)
        for study_id in candidate_studies(self.url):
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
            row = get_study_row(self.url, claim.study_id)
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
        attach_trial(self.url, claim.record_id, trial_id, trial.number)
        self._set_worker(current_trial_id=trial_id)
        log.info("study %s: trial %d started", spec.name, trial.number)
        try:
            state, value, test_acc = self._train(trial, spec)
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            finish_record(self.url, claim.record_id, state.name.lower(), test_accuracy=test_acc)
            log.info("study %s: trial %d %s %s", spec.name, trial.number, state.name, value)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            if not isinstance(e, Interrupted | DivergedError | ValueError):
                log.exception("study %s: trial %d failed", spec.name, trial.number)
            try:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception:
                log.exception("could not mark trial %d failed in Optuna", trial.number)
            finish_record(self.url, claim.record_id, "fail", error=reason)
        finally:
            record_diagnosis(self.url, trial_id)  # findings of the ended trial; never raises
            self._set_worker(current_trial_id=None)
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()

    def _train(
        self, trial: optuna.Trial, spec: StudySpec
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

        def on_epoch(m: EpochMetrics) -> bool:
            # One write per epoch: every curve point of this epoch in one statement.
            with session_scope(self.url) as session:
                session.execute(
                    insert(CurvePoint),
                    [
                        {"trial_id": trial_id, "step": m.epoch, "metric": k, "value": v}
                        for k, v in m.values.items()
                    ],
                )
            trial.report(m.values[metric], m.epoch)
            if self.stopping.is_set():
                raise Interrupted("worker stopping; the trial will run again on another worker")
            if (reason := verdict.update(m.values)) is not None:
                trial.set_user_attr(PRUNED_BY_DIAGNOSIS, reason)
                return True
            return trial.should_prune()

        builder = builder_for(spec.model.family)
        result = fit(config, data, on_epoch, prepare_model=prepare, model_builder=builder)
        save_trial_model(self.url, trial_id, result, config, spec, data)
        test_acc = None
        if data.x_test.shape[0] > 0:
            test_acc = evaluate(result.model, data.x_test, data.y_test)[1]
        if result.stopped_by_callback:
            return TrialState.PRUNED, None, test_acc
        # Under early stopping the model (and so the value) is the best epoch's.
        return TrialState.COMPLETE, result.value(metric), test_acc
