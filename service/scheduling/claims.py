"""Claiming trial slots so that a study never runs more than its budget, and giving slots
back when a trial fails or its worker dies.

A slot is claimed with one conditional UPDATE (`slots_used < n_trials`), which both SQLite
(one writer at a time) and PostgreSQL (row lock on the study) apply atomically, so no
number of concurrent workers can overshoot. Optuna's own WAITING queue is not used for
enqueued configurations: popping it is racy on SQLite (no SELECT ... FOR UPDATE), so an
enqueued configuration is claimed here, in the same transaction as its slot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import optuna
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import EnqueuedConfig, Study, TrialRecord, Worker, utcnow
from service.core.optuna_storage import get_storage
from service.core.states import StudyState, TrialState, WorkerState
from service.studies.spec import load_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A budget slot taken by a worker: its `hpo_trials` record, the study, the slot's
    1-based index in the study (seeds the sampler), and the parameters it must run with
    when it is an enqueued configuration or a re-run."""

    record_id: int
    study_id: int
    claim_index: int
    fixed_params: dict[str, Any] | None
    retry_of: int | None = None  # the Optuna trial id this claim re-runs


def expire_deadlines(url: str) -> None:
    """Studies past their timeout start no new trials; running ones finish."""
    now = utcnow()
    with session_scope(url) as session:
        session.execute(
            update(Study)
            .where(Study.status == StudyState.RUNNING, Study.deadline_at.is_not(None))
            .where(Study.deadline_at < now)
            .values(status=StudyState.COMPLETED, finished_at=now, updated_at=now)
        )


def candidate_studies(url: str, only: Sequence[str] | None = None) -> list[int]:
    """Running studies with budget left and below their max_parallel_trials: the highest
    priority first, then the one with the fewest running trials (fair sharing). `only`
    restricts them to these study names (or ids)."""
    query = (
        select(Study.id)
        .where(Study.status == StudyState.RUNNING, Study.slots_used < Study.n_trials)
        .where(
            or_(
                Study.max_parallel_trials.is_(None),
                Study.n_running < Study.max_parallel_trials,
            )
        )
        .order_by(Study.priority.desc(), Study.n_running, Study.id)
    )
    if only is not None:
        ids = [int(ref) for ref in only if ref.isdigit()]
        query = query.where(or_(Study.name.in_(list(only)), Study.id.in_(ids)))
    with session_scope(url) as session:
        return list(session.scalars(query).all())


def claim_slot(url: str, study_id: int, worker_id: int | None) -> Claim | None:
    """Take one budget slot of the study for `worker_id` (None: no worker, e.g. a test), in
    one conditional UPDATE, with the next enqueued configuration if there is one. None when
    the study is not running, its budget is used up or max_parallel_trials are running."""
    with session_scope(url) as session:
        claim_index = session.scalar(
            update(Study)
            .where(
                Study.id == study_id,
                Study.status == StudyState.RUNNING,
                Study.slots_used < Study.n_trials,
                or_(
                    Study.max_parallel_trials.is_(None),
                    Study.n_running < Study.max_parallel_trials,
                ),
            )
            .values(
                slots_used=Study.slots_used + 1,
                n_claims=Study.n_claims + 1,
                n_running=Study.n_running + 1,
                updated_at=utcnow(),
            )
            .returning(Study.n_claims)
        )
        if claim_index is None:
            return None
        # The study row is now locked by this transaction (a write lock on SQLite, a row lock
        # on PostgreSQL): no other claim of this study can interleave until commit. Re-runs
        # of trials whose worker died come first (position -1).
        enqueued = session.scalars(
            select(EnqueuedConfig)
            .where(EnqueuedConfig.study_id == study_id, EnqueuedConfig.claimed.is_(False))
            .order_by(EnqueuedConfig.position, EnqueuedConfig.id)
            .limit(1)
        ).first()
        if enqueued is not None:
            enqueued.claimed = True
        record = TrialRecord(
            study_id=study_id,
            claim_index=claim_index,
            worker_id=worker_id,
            enqueued_id=None if enqueued is None else enqueued.id,
            retry_of=None if enqueued is None else enqueued.retry_of,
            retry_number=0 if enqueued is None else enqueued.retry_number,
            state=TrialState.CLAIMED,
            started_at=utcnow(),
        )
        session.add(record)
        session.flush()
        return Claim(
            record_id=record.id,
            study_id=study_id,
            claim_index=claim_index,
            fixed_params=None if enqueued is None else dict(enqueued.params),
            retry_of=None if enqueued is None else enqueued.retry_of,
        )


def attach_trial(url: str, record_id: int, optuna_trial_id: int, number: int) -> bool:
    """Link the claim to its Optuna trial. False if the record was finished meanwhile (its
    worker was declared dead before the link existed): the caller must not train it, or
    the study would run one trial more than its budget."""
    with session_scope(url) as session:
        session.execute(
            update(TrialRecord)
            .where(TrialRecord.id == record_id)
            .values(optuna_trial_id=optuna_trial_id, number=number)
        )
        # A record the reaper already finished keeps its final state.
        result = session.execute(
            update(TrialRecord)
            .where(TrialRecord.id == record_id, TrialRecord.finished_at.is_(None))
            .values(state=TrialState.RUNNING)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def finish_record(
    url: str,
    record_id: int,
    state: TrialState,
    *,
    error: str | None = None,
    test_accuracy: float | None = None,
    retry_params: dict[str, Any] | None = None,
    unattached_only: bool = False,
) -> bool:
    """Mark a claimed trial finished; on failure give its slot back. Returns False if it was
    already finished (e.g. by the reaper), so that a slot is never given back twice.

    `retry_params`: the failure was not the trial's fault (its worker died or stopped), so
    it is enqueued again with these parameters, up to the spec's `budget.max_retries`
    times, in the same transaction: exactly one re-run per failure.

    `unattached_only`: finish it only if it has no Optuna trial yet (the reaper read it so;
    if its worker attached one since, the reaper must fail that trial in Optuna first)."""
    now = utcnow()
    condition = [TrialRecord.id == record_id, TrialRecord.finished_at.is_(None)]
    if unattached_only:
        condition.append(TrialRecord.optuna_trial_id.is_(None))
    with session_scope(url) as session:
        result = session.execute(
            update(TrialRecord)
            .where(*condition)
            .values(state=state, error=error, test_accuracy=test_accuracy, finished_at=now)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        record = session.get(TrialRecord, record_id)
        assert record is not None
        values: dict[str, Any] = {"n_running": Study.n_running - 1, "updated_at": now}
        if state == TrialState.FAIL:
            values.update(slots_used=Study.slots_used - 1, n_failed=Study.n_failed + 1)
        session.execute(update(Study).where(Study.id == record.study_id).values(**values))
        if state == TrialState.FAIL and retry_params is not None:
            enqueue_retry(session, record, retry_params)
        _settle_status(session, record.study_id)
    return True


def enqueue_retry(session: Session, record: TrialRecord, params: dict[str, Any]) -> bool:
    """Enqueue a re-run of the failed `record` with `params` (first in the study's queue),
    unless it never had an Optuna trial or already ran `budget.max_retries` times. True if
    it enqueued one. Runs in the caller's transaction."""
    study = session.get(Study, record.study_id)
    assert study is not None
    max_retries = load_spec(study.spec).budget.max_retries
    if record.optuna_trial_id is None or record.retry_number >= max_retries:
        return False
    session.add(
        EnqueuedConfig(
            study_id=record.study_id,
            position=-1,
            params=params,
            claimed=False,
            retry_of=record.optuna_trial_id,
            retry_number=record.retry_number + 1,
        )
    )
    return True


def _settle_status(session: Session, study_id: int) -> None:
    """completed once the budget is finished; failed past max_failed_trials."""
    study = session.get(Study, study_id, with_for_update=True)
    if study is None or study.status != StudyState.RUNNING:
        return
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = session.scalar(
        select(func.count())
        .select_from(TrialRecord)
        .where(TrialRecord.study_id == study_id, TrialRecord.state.in_(done))
    )
    max_failed = load_spec(study.spec).budget.max_failed_trials
    if max_failed is None:
        max_failed = study.n_trials
    now = utcnow()
    if (finished or 0) >= study.n_trials:
        study.status, study.finished_at, study.updated_at = StudyState.COMPLETED, now, now
    elif study.n_failed > max_failed:
        last = session.scalar(
            select(TrialRecord.error)
            .where(TrialRecord.study_id == study_id, TrialRecord.state == TrialState.FAIL)
            .order_by(TrialRecord.id.desc())
            .limit(1)
        )
        study.status, study.finished_at, study.updated_at = StudyState.FAILED, now, now
        study.error = f"{study.n_failed} trials failed (more than {max_failed}); last: {last}"


def reap_dead_workers(url: str, grace_seconds: float) -> int:
    """Mark workers without a heartbeat for `grace_seconds` dead and fail their trials."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with session_scope(url) as session:
        dead = session.scalars(
            select(Worker.id).where(
                Worker.status == WorkerState.RUNNING, Worker.heartbeat_at < cutoff
            )
        ).all()
    for worker_id in dead:
        reap_worker(url, worker_id, f"worker {worker_id} stopped sending heartbeats")
    return len(dead)


def reap_worker(url: str, worker_id: int, reason: str) -> None:
    """Mark a running worker dead and fail its unfinished trials with `reason`."""
    with session_scope(url) as session:
        session.execute(
            update(Worker)
            .where(Worker.id == worker_id, Worker.status == WorkerState.RUNNING)
            .values(status=WorkerState.DEAD, current_trial_id=None)
        )
    fail_orphans(url, worker_id, reason)


def fail_orphans(url: str, worker_id: int, reason: str) -> None:
    """Finish the unfinished trial records of a worker that is not training them."""
    with session_scope(url) as session:
        orphans = session.execute(
            select(TrialRecord.id, TrialRecord.optuna_trial_id).where(
                and_(TrialRecord.worker_id == worker_id, TrialRecord.finished_at.is_(None))
            )
        ).all()
    storage = get_storage(url)
    for record_id, optuna_trial_id in orphans:
        if optuna_trial_id is None:
            if finish_record(url, record_id, TrialState.FAIL, error=reason, unattached_only=True):
                log.warning(
                    "trial record %s of worker %s -> fail (%s)", record_id, worker_id, reason
                )
                continue
            # Its worker attached an Optuna trial since we looked (or it finished).
            with session_scope(url) as session:
                optuna_trial_id = session.scalar(
                    select(TrialRecord.optuna_trial_id).where(
                        TrialRecord.id == record_id, TrialRecord.finished_at.is_(None)
                    )
                )
            if optuna_trial_id is None:
                continue
        state = TrialState.FAIL
        error: str | None = reason
        try:
            storage.set_trial_state_values(optuna_trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            # It finished in Optuna but the worker died before recording it here.
            state, error = TrialState(storage.get_trial(optuna_trial_id).state.name.lower()), None
        params = storage.get_trial(optuna_trial_id).params
        finish_record(url, record_id, state, error=error, retry_params=params)
        log.warning("trial record %s of worker %s -> %s (%s)", record_id, worker_id, state, reason)
