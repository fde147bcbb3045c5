"""One trial, start to end: start -> attach -> train -> tell and finish -> clean up.

`TrialRunner.run` reads in that order, one method per phase. Training is the trainer's
`fit` with `EpochReport` as its per-epoch callback: one write of the epoch's curve points,
the objective reported to Optuna, then the early verdict and the pruner decide whether the
trial goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from functools import partial

import optuna
import torch
from sqlalchemy.exc import SQLAlchemyError

from service.analysis.diagnoses import PRUNED_BY_DIAGNOSIS, record_diagnosis
from service.core.db.engine import session_scope
from service.core.db.retry import retry_db
from service.core.optuna_compat import create_running_trial, trial_id_of
from service.core.optuna_storage import get_storage
from service.core.states import TrialState
from service.integrations.trials import trial_ended, trial_told
from service.scheduling.claims import Claim, attach_trial, finish_record, link_created_trial
from service.scheduling.orphans import close_unclaimed_trial
from service.scheduling.workers import set_current_trial
from service.studies.model_families import builder_for
from service.studies.search.factories import build_sampler
from service.studies.search.space import suggest_params
from service.studies.service import get_study_row
from service.studies.spec import StudySpec, load_spec, train_config
from service.trials.artifacts import save_trial_model
from service.trials.transfer import prepare_from
from service.trials.warnings import record_warnings
from service.worker.curves import write_epoch
from service.worker.data import DatasetCache
from service.worker.faults import crash_point
from service.worker.objectives import reports_to_optuna, trial_values
from service.worker.oom import fit_with_oom_retry, free_gpu_memory, record_oom_retry
from service.worker.progress import log_epoch
from service.worker.resume import ResumePlan, plan_training
from service.worker.study_handles import open_study
from trainer import (
    DivergedError,
    EpochMetrics,
    FitResult,
    TensorData,
    TrainConfig,
    evaluate_test,
    fit,
)
from trainer.diagnosis import EarlyVerdict
from trainer.loop import ModelBuilder, PrepareModel

log = logging.getLogger("hpo.worker")

STORAGE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)


class Interrupted(Exception):
    """The worker was asked to stop while a trial was running."""


# Failures that are the trial's own (or a stop): logged without a traceback.
QUIET_FAILURES = (Interrupted, DivergedError, ValueError, torch.cuda.OutOfMemoryError)


@dataclass(frozen=True)
class Started:
    """A claimed trial that exists in Optuna."""

    spec: StudySpec
    study: optuna.Study
    trial: optuna.Trial
    trial_id: int  # Optuna's storage id, which our tables reference


@dataclass(frozen=True)
class Outcome:
    """How training ended: COMPLETE with the objective's value, or PRUNED (no value)."""

    state: TrialState
    value: float | list[float] | None  # a multi-objective study's: one per objective
    test_metrics: dict[str, float]  # trainer.evaluate_test: empty without a test split
    device_seconds: float | None = None  # the device time it used (a pack's share)


@dataclass(frozen=True)
class Prepared:
    """A started trial ready to train: its parameters suggested, its config, data,
    per-epoch callback and resume plan, the `init_from` hook and plug-in model builder."""

    config: TrainConfig
    data: TensorData
    report: EpochReport
    plan: ResumePlan
    prepare: PrepareModel | None
    builder: ModelBuilder | None


@dataclass
class EpochReport:
    """The trainer's per-epoch callback: returns True to stop the trial (pruned)."""

    url: str
    trial: optuna.Trial
    trial_id: int
    metric: str  # the objective's metric: logged, and reported to Optuna
    verdict: EarlyVerdict  # stops hopeless trials: diverged, or vanishing and not learning
    reported: set[int] = field(default_factory=set)
    max_epochs: int = 0  # for the log line
    to_optuna: bool = True  # False: multi-objective, Optuna neither takes reports nor prunes

    def __call__(self, m: EpochMetrics) -> bool:
        write_epoch(self.url, self.trial_id, m)  # the epoch's one write
        log_epoch(self.trial, self.trial_id, self.metric, m, self.max_epochs)
        # a re-run after OOM repeats reported epochs
        if self.to_optuna and m.epoch not in self.reported:
            retry_db(partial(self.trial.report, m.values[self.metric], m.epoch), "report")
            self.reported.add(m.epoch)
            crash_point("mid_train", epoch=m.epoch)
        if (reason := self.verdict.update(m.values)) is not None:
            set_reason = partial(self.trial.set_user_attr, PRUNED_BY_DIAGNOSIS, reason)
            retry_db(set_reason, "verdict")
            return True
        return self.to_optuna and retry_db(self.trial.should_prune, "should_prune")


def _maximize(started: Started) -> bool:
    return started.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE


class TrialRunner:
    """Trains claimed trials for one worker on its device.

    `interruptible()` is the window in which the worker's stop deadline may raise
    `Interrupted` in the training thread: it is open only while `fit` runs.
    """

    def __init__(
        self,
        url: str,
        worker_id: int,
        device: str,
        data: DatasetCache,
        interruptible: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self.url = url
        self.worker_id = worker_id
        self.device = device
        self.data = data
        self.interruptible = interruptible

    def run(self, claim: Claim) -> None:
        """Run the claimed trial to its end and record it. Database errors while starting
        or finishing propagate (the worker backs off and fails the claim later); any other
        error fails the trial with its reason."""
        started = self.start(claim)
        if started is None or not self.attach(claim, started):
            return
        try:
            began = time.monotonic()
            try:
                outcome = self.train(claim, started)
            except Exception as e:
                self.fail(claim, started, e, device_seconds=time.monotonic() - began)
            else:
                # Not inside the `try` above: once Optuna has the trial's final state,
                # nothing raised later may turn it into a failure.
                outcome = replace(outcome, device_seconds=time.monotonic() - began)
                self.finish(claim, started, outcome)
        finally:
            self.clean_up(started)

    def start(self, claim: Claim) -> Started | None:
        """Load the study and create the claim's Optuna trial, RUNNING, tagged with the
        claim (with its parameters when it is an enqueued configuration, a grid point or a
        re-run; else its sampler suggests them, as after `ask`). None if that failed: the
        trial, if it was created, and the claim are finished FAIL with the reason."""
        try:
            with session_scope(self.url) as session:
                spec = load_spec(get_study_row(session, claim.study_id).spec)
            sampler = build_sampler(spec, claim.claim_index)
            if spec.sampler.name == "grid":
                # The claim handed out this trial's grid point (scheduling.grid), so every
                # parameter is fixed; GridSampler's own bookkeeping (a point per process,
                # Study.stop() when it believes the grid used up) must stay out of it.
                sampler = optuna.samplers.RandomSampler(seed=claim.claim_index)
            study = open_study(self.url, spec, sampler)  # flat in the study's size
            # Created RUNNING directly, tagged with the claim in the same transaction: no
            # moment exists in which the trial is RUNNING and its claim cannot find it.
            trial = create_running_trial(
                study, claim.record_id, claim.fixed_params, started_at=claim.claimed_at
            )
        except STORAGE_ERRORS:
            raise  # the run loop backs off; the claim is failed once the database is back
        except Exception as e:
            log.exception("could not start a trial for study %s", claim.study_id)
            reason = f"{type(e).__name__}: {e}"
            # The trial may exist (a sampler's before_trial raised): fail it too, so that
            # Optuna's states and our records agree.
            trial_id = link_created_trial(self.url, claim.record_id)
            if trial_id is not None:
                get_storage(self.url).set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
            finish_record(self.url, claim.record_id, TrialState.FAIL, error=reason)
            return None
        crash_point("after_create")
        return Started(spec, study, trial, trial_id_of(trial))

    def attach(self, claim: Claim, started: Started) -> bool:
        """Link the claim to its Optuna trial and name it the worker's current trial. False
        (and the trial failed in Optuna) if the claim was reaped meanwhile."""
        trial = started.trial
        link = partial(attach_trial, self.url, claim.record_id, started.trial_id, trial.number)
        if not retry_db(link, "attach"):
            # Declared dead (e.g. starved of CPU past the grace period) before the link
            # existed: the slot went back, so training this trial would overshoot the budget.
            log.warning(
                "study %s: claim %d was reaped; not training it", started.spec.name, claim.record_id
            )
            close = partial(
                close_unclaimed_trial,
                self.url,
                started.trial_id,
                claim.study_id,
                claim.record_id,
                "its claim was released before the trial started",
            )
            retry_db(close, "close")
            return False
        crash_point("after_attach")
        retry_db(
            partial(set_current_trial, self.url, self.worker_id, started.trial_id), "current trial"
        )
        log.info("study %s: trial %d started", started.spec.name, trial.number)
        return True

    def train(self, claim: Claim, started: Started) -> Outcome:
        """Suggest the parameters, train, save the model, measure the test metrics."""
        prepared = self.prepare(claim, started)
        return self.conclude(started, prepared, self.fit_prepared(claim, started, prepared))

    def fit_prepared(self, claim: Claim, started: Started, prepared: Prepared) -> FitResult:
        """Train the prepared trial (out of GPU memory: once more with half the batch)."""
        fit_once = partial(self._fit, prepared=prepared)
        trial = started.trial
        on_retry = partial(record_oom_retry, self.url, claim.record_id, trial, started.trial_id)
        return fit_with_oom_retry(fit_once, prepared.config, device=self.device, on_retry=on_retry)

    def prepare(self, claim: Claim, started: Started) -> Prepared:
        """Suggest the parameters and build what training the trial needs (its config,
        warnings recorded, data, per-epoch callback, resume plan)."""
        spec, trial = started.spec, started.trial
        config = train_config(spec, suggest_params(trial, spec), trial_number=trial.number)
        data = self.data.get(spec.dataset)
        record_warnings(self.url, started.trial_id, config)
        report = EpochReport(
            self.url,
            trial,
            started.trial_id,
            spec.objective.metric,
            EarlyVerdict(n_classes=data.n_classes, task=data.task),
            max_epochs=config.max_epochs,
            to_optuna=reports_to_optuna(spec),
        )
        plan = plan_training(self.url, claim, started.trial_id, spec.checkpoint, config, report)
        return Prepared(
            config=plan.config,  # a resumed trial keeps the seed of the run it continues
            data=data,
            report=report,
            plan=plan,
            prepare=None if spec.init_from is None else prepare_from(self.url, spec.init_from),
            builder=builder_for(spec.model.family),
        )

    def conclude(self, started: Started, prepared: Prepared, result: FitResult) -> Outcome:
        """Save the trained model, measure test accuracy: the outcome to tell."""
        spec, config, data = started.spec, prepared.config, prepared.data
        save_trial_model(self.url, started.trial_id, result, config, spec, data)
        tested = evaluate_test(result.model, data)
        if result.stopped_by_callback:
            return Outcome(TrialState.PRUNED, None, tested)
        # Under early stopping the model (and so the value) is the best epoch's.
        return Outcome(TrialState.COMPLETE, trial_values(spec, result, config, data), tested)

    def finish(self, claim: Claim, started: Started, outcome: Outcome) -> None:
        """Tell Optuna the outcome, then finish the claim's record with the state Optuna
        stored (which is final: whatever Optuna raises after storing it changes nothing).
        If Optuna could not store it, the trial fails with that error."""
        crash_point("before_tell")
        try:
            state = self._tell(started, outcome.value, outcome.state)
        except STORAGE_ERRORS:
            raise
        except Exception as e:
            self.fail(claim, started, e)
            return
        crash_point("after_tell")
        trial_told(self.url, started.spec.name, started.trial_id, maximize=_maximize(started))
        error = None
        if state != outcome.state:  # e.g. Optuna stores a non-finite value as a failure
            error = f"Optuna recorded the trial {state} (value {outcome.value})"
        record = partial(
            finish_record,
            self.url,
            claim.record_id,
            state,
            error=error,
            test_accuracy=outcome.test_metrics.get("test_accuracy"),
            test_metrics=outcome.test_metrics,
            device_seconds=outcome.device_seconds,
        )
        retry_db(record, "finish")
        crash_point("after_finish")
        log.info(
            "study %s: trial %d %s %s",
            started.spec.name,
            started.trial.number,
            state.name,
            outcome.value,
        )

    def fail(
        self,
        claim: Claim,
        started: Started,
        e: BaseException,
        *,
        device_seconds: float | None = None,
    ) -> None:
        """Fail the trial with `e` as its reason; a trial interrupted by a stop was not at
        fault and is enqueued again with the same parameters."""
        if not isinstance(e, QUIET_FAILURES):
            log.exception("study %s: trial %d failed", started.spec.name, started.trial.number)
        retry_params = started.trial.params if isinstance(e, Interrupted) else None
        state = TrialState.FAIL
        error: str | None = f"{type(e).__name__}: {e}"
        try:
            state = self._tell(started, None, TrialState.FAIL)
        except Exception:
            # The orphan sweep fails it in Optuna later; our record is FAIL (and counted).
            log.exception("could not mark trial %d failed in Optuna", started.trial.number)
        if state != TrialState.FAIL:  # Optuna had its final state before the error
            log.warning("trial %d stays %s in Optuna despite: %s", started.trial.number, state, e)
            error, retry_params = None, None
        record = partial(
            finish_record,
            self.url,
            claim.record_id,
            state,
            error=error,
            retry_params=retry_params,
            device_seconds=device_seconds,
        )
        retry_db(record, "finish")

    def clean_up(self, started: Started) -> None:
        """Record the ended trial's diagnosis, clear the worker's current trial and free the
        GPU memory the trial held."""
        record_diagnosis(self.url, started.trial_id)  # never raises
        trial_ended(self.url, started.spec.name, started.trial_id)  # MLflow; never raises
        try:
            set_current_trial(self.url, self.worker_id, None)
        except SQLAlchemyError as e:
            log.warning("could not clear the current trial: %s", type(e).__name__)
        free_gpu_memory(self.device)

    def _tell(
        self, started: Started, value: float | list[float] | None, state: TrialState
    ) -> TrialState:
        """Tell Optuna `state` (and `value`); the state Optuna stored, which differs when
        the trial had been finished already (e.g. failed by the reaper) or Optuna refused
        the value. Raises what Optuna raised only if the trial is not finished after it."""
        # skip_if_finished: a retry after a lost connection may find it already told.
        tell = partial(
            started.study.tell,
            started.trial,
            value,
            state=optuna.trial.TrialState[state.name],
            skip_if_finished=True,
        )
        try:
            frozen = retry_db(tell, "tell")
        except STORAGE_ERRORS:
            raise
        except Exception as e:
            # Optuna stores the state in a `finally` after the sampler's `after_trial`, so an
            # error there (GridSampler's Study.stop() outside optimize(), a plug-in's bug)
            # arrives after the result is final: the stored state is the truth.
            read = partial(get_storage(self.url).get_trial, started.trial_id)
            frozen = retry_db(read, "read trial")
            if not frozen.state.is_finished():
                raise
            log.warning(
                "study %s: trial %d is %s; Optuna raised after storing it (ignored): %s: %s",
                started.spec.name,
                started.trial.number,
                frozen.state.name,
                type(e).__name__,
                e,
            )
        return TrialState(frozen.state.name.lower())

    def _fit(self, config: TrainConfig, *, prepared: Prepared) -> FitResult:
        data, on_epoch, prepare = prepared.data, prepared.report, prepared.prepare
        builder, plan = prepared.builder, prepared.plan
        resume, saver = plan.take(), plan.checkpointer
        with self.interruptible():  # from here the stop deadline may interrupt the trial
            if builder is None:  # a shipped family: the trainer builds it
                return fit(
                    config, data, on_epoch, prepare_model=prepare, checkpoint=saver, resume=resume
                )
            return fit(
                config,
                data,
                on_epoch,
                prepare_model=prepare,
                model_builder=builder,
                checkpoint=saver,
                resume=resume,
            )
