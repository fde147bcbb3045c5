"""Re-runs resume from the training state the trial they re-run saved (issue 16 §6).

While a trial trains, its `Checkpointer` (the spec's `checkpoint` intervals) stores the
trainer's full state (`trainer.state`: model, optimizer, schedule, early stopping, curves,
random generators) as the trial's one `checkpoint` artifact, replaced at each save. When the
worker dies or is stopped, the trial fails and a re-run with the same parameters is enqueued
(`scheduling.claims`), a new Optuna trial whose claim names the old one (`retry_of`).

The re-run, before training, *adopts* that state in one transaction: the artifact moves to
the new trial, the old trial's curve points up to the state's epoch E are copied to the new
one, and its record notes `resumed_from_epoch = E`. It then reports epochs 1..E's objective
values to Optuna (the pruner sees a full history; each step once) and trains epochs E+1...
A re-run of the re-run finds the state under the trial it re-runs, as before. Adopting is
idempotent (a retry after a lost connection finds the state already moved), and a trial that
ends without a re-run loses its state (`claims.finish_record`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import optuna
from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import CHECKPOINT_KIND, Artifact, CurvePoint, TrialRecord
from service.core.db.retry import retry_db
from service.scheduling.claims import Claim
from service.studies.checkpointing import CheckpointSpec
from trainer import TrainConfig
from trainer.diagnosis import EarlyVerdict
from trainer.state import Checkpointer, TrainingState, load_state, resume_problem, state_bytes

log = logging.getLogger("hpo.worker")


@dataclass
class ResumePlan:
    """How a trial trains: with `config` (a resumed one keeps the seed of the run it
    continues), saving through `checkpointer` (None: never), from `state` (None: epoch 1)."""

    config: TrainConfig
    checkpointer: Checkpointer | None
    state: TrainingState | None = None
    _taken: bool = field(default=False, repr=False)

    def take(self) -> TrainingState | None:
        """The state to resume from, once: a second `fit` of the same trial (the re-run
        with half the batch after running out of GPU memory) starts from epoch 1."""
        state, self.state, self._taken = (None if self._taken else self.state), None, True
        return state


class EpochReporter(Protocol):
    """What the worker's per-epoch callback (`worker.trial.EpochReport`) keeps per trial."""

    trial: optuna.Trial
    metric: str  # the objective's metric, reported to Optuna
    verdict: EarlyVerdict
    reported: set[int]  # epochs reported to Optuna
    to_optuna: bool  # False in a multi-objective study: nothing is reported


def plan_training(
    url: str,
    claim: Claim,
    trial_id: int,
    every: CheckpointSpec,
    config: TrainConfig,
    report: EpochReporter,
) -> ResumePlan:
    """The trial's checkpointer (None when `every` has no interval) and, for a re-run of a
    trial that saved a usable state, that state adopted (see the module's docstring) with
    epochs 1..E replayed through `report`: each objective value reported to Optuna, the
    early verdict fed, the epoch marked reported. Database errors are retried through
    outages (`retry_db`)."""
    checkpointer = None
    if every.every_epochs is not None or every.every_seconds is not None:
        checkpointer = Checkpointer(
            partial(save_state, url, trial_id),
            every_epochs=every.every_epochs,
            every_seconds=every.every_seconds,
        )
    plan = ResumePlan(config, checkpointer)
    if claim.retry_of is None:
        return plan
    wanted = dataclasses.asdict(config)
    adopt = partial(
        adopt_state, url, claim.retry_of, trial_id, claim.record_id, wanted, report.metric
    )
    adopted = retry_db(adopt, "adopt checkpoint")
    if adopted is None:
        return plan
    state, history = adopted
    for epoch in range(1, state.epoch + 1):
        values = history[epoch]
        if report.to_optuna and epoch not in report.reported:
            retry_db(partial(report.trial.report, values[report.metric], epoch), "report")
            report.reported.add(epoch)
        report.verdict.update(values)
    log.info(
        "trial %d resumes at epoch %d from trial %d", trial_id, state.epoch + 1, claim.retry_of
    )
    plan.state = state
    plan.config = dataclasses.replace(config, seed=int(state.config["seed"]))
    return plan


def save_state(url: str, trial_id: int, state: TrainingState) -> None:
    """Store `state` as the trial's checkpoint (replacing the one before), unless the trial
    was finished meanwhile (its worker was declared dead and a re-run may own the state
    now). Retries through database outages."""
    blob = state_bytes(state)
    retry_db(partial(_store, url, trial_id, state.epoch, blob), "checkpoint")


def _store(url: str, trial_id: int, epoch: int, blob: bytes) -> None:
    values = {
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "meta": {"epoch": epoch},
        "data": blob,
    }
    with session_scope(url) as session:
        open_record = session.scalar(
            select(TrialRecord.id).where(
                TrialRecord.optuna_trial_id == trial_id, TrialRecord.finished_at.is_(None)
            )
        )
        if open_record is None:
            return
        changed = session.execute(
            update(Artifact)
            .where(Artifact.trial_id == trial_id, Artifact.kind == CHECKPOINT_KIND)
            .values(**values)
        )
        if changed.rowcount == 0:  # type: ignore[attr-defined]
            session.add(Artifact(trial_id=trial_id, kind=CHECKPOINT_KIND, **values))


def adopt_state(
    url: str,
    old_trial: int,
    new_trial: int,
    record_id: int,
    config: Mapping[str, object],
    metric: str,
) -> tuple[TrainingState, dict[int, dict[str, float]]] | None:
    """Move `old_trial`'s checkpoint to `new_trial` and copy the old curve points up to its
    epoch, in one transaction (or find that done already); the state and the copied points
    by epoch. None, and the unusable checkpoint deleted, when there is none, it does not
    load, its configuration differs from `config` (e.g. the old trial ran with half the
    batch after running out of GPU memory), or the old curves lack an epoch before it."""
    with session_scope(url) as session:
        blob = _checkpoint_data(session, new_trial)  # adopted by an earlier attempt
        source = new_trial
        if blob is None:
            blob, source = _checkpoint_data(session, old_trial), old_trial
        if blob is None:
            return None
        problem: str | None
        try:
            state = load_state(blob)
            problem = resume_problem(state, dict(config))
        except ValueError as e:
            problem = str(e)
        if problem is None and source == old_trial:
            problem = _copy_curves(session, old_trial, new_trial, state.epoch, metric)
        if problem is not None:
            log.warning(
                "trial %d starts over: trial %d's checkpoint: %s", new_trial, source, problem
            )
            session.execute(
                delete(Artifact).where(
                    Artifact.trial_id == source, Artifact.kind == CHECKPOINT_KIND
                )
            )
            return None
        if source == old_trial:
            session.execute(
                update(Artifact)
                .where(Artifact.trial_id == old_trial, Artifact.kind == CHECKPOINT_KIND)
                .values(trial_id=new_trial)
            )
            session.execute(
                update(TrialRecord)
                .where(TrialRecord.id == record_id)
                .values(resumed_from_epoch=state.epoch)
            )
        rows = session.execute(
            select(CurvePoint.step, CurvePoint.metric, CurvePoint.value).where(
                CurvePoint.trial_id == new_trial, CurvePoint.step <= state.epoch
            )
        ).all()
    history: dict[int, dict[str, float]] = {}
    for step, name, value in rows:
        history.setdefault(step, {})[name] = value
    return state, history


def _checkpoint_data(session: Session, trial_id: int) -> bytes | None:
    data = session.scalar(
        select(Artifact.data).where(Artifact.trial_id == trial_id, Artifact.kind == CHECKPOINT_KIND)
    )
    return None if data is None else bytes(data)


def _copy_curves(
    session: Session, old_trial: int, new_trial: int, epoch: int, metric: str
) -> str | None:
    """Copy `old_trial`'s curve points of epochs 1..`epoch` to `new_trial`; why not, if the
    old curves miss one of those epochs' objective values."""
    have = session.scalar(
        select(func.count()).where(
            CurvePoint.trial_id == old_trial,
            CurvePoint.metric == metric,
            CurvePoint.step <= epoch,
        )
    )
    if have != epoch:
        return f"its curves hold {have} of the {epoch} epochs it saved"
    copied = select(literal(new_trial), CurvePoint.step, CurvePoint.metric, CurvePoint.value).where(
        CurvePoint.trial_id == old_trial, CurvePoint.step <= epoch
    )
    session.execute(insert(CurvePoint).from_select(["trial_id", "step", "metric", "value"], copied))
    return None
