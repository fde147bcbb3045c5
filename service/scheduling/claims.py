"""Claiming trial slots so that a study never runs more than its budget, and giving slots
back when a trial fails or its worker dies.

Every study-level limit is a condition of the claim itself: the claim is one conditional
UPDATE of the study's row (running, budget left, below `max_parallel_trials`, before its
deadline), which SQLite (one writer at a time) and PostgreSQL (row lock on the study) apply
atomically, so no number of concurrent workers can overshoot; a stop, the failure cap and a
used-up grid change the row (its status, its queue) in the transaction that decides them.
Optuna's own WAITING queue is not used for enqueued configurations: popping it is racy on
SQLite (no SELECT ... FOR UPDATE), so an enqueued configuration (or a grid point) is claimed
here, in the same transaction as its slot.

A claim's life: `claim_slot` -> the worker creates its Optuna trial, tagged with the claim's
id (`core.optuna_compat.CLAIM_ATTR`) -> `attach_trial` -> `finish_record`. A worker that dies
at any step is handled by `fail_orphans` (called by the reaper and `hpo serve`): before the
Optuna trial exists, the claim is released (`release_claim`: slot and configuration go back,
no failure is counted); after, the trial is failed in Optuna first and the record follows.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import optuna
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import (
    CHECKPOINT_KIND,
    Artifact,
    EnqueuedConfig,
    Study,
    TrialRecord,
    Worker,
    utcnow,
)
from service.core.optuna_compat import CLAIM_ATTR
from service.core.optuna_compat import rdb_models as om
from service.core.optuna_storage import get_storage
from service.core.states import StudyState, TrialState, WorkerState
from service.integrations.notify import record_status_event
from service.scheduling.grid import grid_point, grid_size
from service.studies.spec import StudySpec, load_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A budget slot taken by a worker: its `hpo_trials` record, the study, the slot's
    1-based index in the study (seeds the sampler), and the parameters it must run with
    when it is an enqueued configuration, a grid point or a re-run."""

    record_id: int
    study_id: int
    claim_index: int
    fixed_params: dict[str, Any] | None
    retry_of: int | None = None  # the Optuna trial id this claim re-runs
    claimed_at: datetime | None = None  # naive UTC: the trial's start


def _open(now: datetime) -> Any:
    """The conditions under which a study takes a new trial, as SQL on `hpo_studies`."""
    return and_(
        Study.status == StudyState.RUNNING,
        Study.slots_used < Study.n_trials,
        or_(Study.max_parallel_trials.is_(None), Study.n_running < Study.max_parallel_trials),
        or_(Study.deadline_at.is_(None), Study.deadline_at > now),
        or_(
            Study.device_seconds_limit.is_(None), Study.device_seconds < Study.device_seconds_limit
        ),
    )


def expire_deadlines(url: str) -> None:
    """Mark studies past their timeout completed (running trials finish). Claims check the
    deadline themselves; this only brings the status up to date."""
    now = utcnow()
    with session_scope(url) as session:
        expired = session.scalars(
            update(Study)
            .where(Study.status == StudyState.RUNNING, Study.deadline_at.is_not(None))
            .where(Study.deadline_at < now)
            .values(status=StudyState.COMPLETED, finished_at=now, updated_at=now)
            .returning(Study.id)
        ).all()
        for study in session.scalars(select(Study).where(Study.id.in_(expired))):
            record_status_event(session, study)  # its webhook event, if the spec asks


def candidate_studies(url: str, only: Sequence[str] | None = None) -> list[int]:
    """Studies that take a new trial now (running, budget left, below max_parallel_trials,
    before their deadline): the highest priority first, then the one with the fewest
    running trials (fair sharing). `only` restricts them to these study names (or ids)."""
    query = (
        select(Study.id)
        .where(_open(utcnow()))
        .order_by(Study.priority.desc(), Study.n_running, Study.id)
    )
    if only is not None:
        ids = [int(ref) for ref in only if ref.isdigit()]
        query = query.where(or_(Study.name.in_(list(only)), Study.id.in_(ids)))
    with session_scope(url) as session:
        return list(session.scalars(query).all())


def claim_slot(url: str, study_id: int, worker_id: int | None) -> Claim | None:
    """Take one budget slot of the study for `worker_id` (None: no worker, e.g. a test), in
    one conditional UPDATE, with the next enqueued configuration if there is one (else, in a
    grid study, the next grid point). None when the study takes no new trial: not running,
    budget used up, max_parallel_trials running, past its deadline or its device-hour
    budget, or its grid used up."""
    claims = claim_pack(url, study_id, worker_id, max_trials=1)
    return claims[0] if claims else None


def claim_pack(
    url: str, study_id: int, worker_id: int | None, max_trials: int | None = None
) -> list[Claim]:
    """Take up to `max_trials` slots of the study (None: the spec's `fuse.max_trials`) in
    one transaction, each as `claim_slot` takes one: every member is one conditional UPDATE
    under the study's row lock, so the budget, `max_parallel_trials` (which counts every
    member), the deadline and the device-hour budget hold exactly. Fewer (or none) when the
    study takes fewer."""
    now = utcnow()
    claims: list[Claim] = []
    with session_scope(url) as session:
        while max_trials is None or len(claims) < max_trials:
            claim = _claim_one(session, study_id, worker_id, now)
            if claim is None:
                break
            claims.append(claim[0])
            if max_trials is None:
                max_trials = claim[1].fuse.max_trials
    return claims


def _claim_one(
    session: Session, study_id: int, worker_id: int | None, now: datetime
) -> tuple[Claim, StudySpec] | None:
    """One slot of the study, in the caller's transaction (see `claim_slot`); None, with
    nothing changed, when the study takes no new trial."""
    claimed = session.execute(
        update(Study)
        .where(Study.id == study_id, _open(now))
        .values(
            slots_used=Study.slots_used + 1,
            n_claims=Study.n_claims + 1,
            n_running=Study.n_running + 1,
            updated_at=now,
        )
        .returning(Study.n_claims, Study.spec, Study.optuna_study_id)
    ).first()
    if claimed is None:
        return None
    claim_index, stored_spec, optuna_study_id = claimed
    spec = load_spec(stored_spec)
    # The study row is now locked by this transaction (a write lock on SQLite, a row lock
    # on PostgreSQL): no other claim of this study can interleave until commit.
    # Re-runs of trials whose worker died come first (position -1).
    enqueued = session.scalars(
        select(EnqueuedConfig)
        .where(EnqueuedConfig.study_id == study_id, EnqueuedConfig.claimed.is_(False))
        .order_by(EnqueuedConfig.position, EnqueuedConfig.id)
        .limit(1)
    ).first()
    if enqueued is not None:
        enqueued.claimed = True
    elif spec.sampler.name == "grid":
        enqueued = _next_grid_point(session, study_id, spec, optuna_study_id)
        if enqueued is None:  # every point was handed out: give the slot back
            session.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(
                    slots_used=Study.slots_used - 1,
                    n_claims=Study.n_claims - 1,
                    n_running=Study.n_running - 1,
                )
            )
            return None
    record = TrialRecord(
        study_id=study_id,
        claim_index=claim_index,
        worker_id=worker_id,
        enqueued_id=None if enqueued is None else enqueued.id,
        retry_of=None if enqueued is None else enqueued.retry_of,
        retry_number=0 if enqueued is None else enqueued.retry_number,
        state=TrialState.CLAIMED,
        started_at=now,
    )
    session.add(record)
    session.flush()
    claim = Claim(
        record_id=record.id,
        study_id=study_id,
        claim_index=claim_index,
        fixed_params=None if enqueued is None else dict(enqueued.params),
        retry_of=None if enqueued is None else enqueued.retry_of,
        claimed_at=now,
    )
    return claim, spec


def _grid_cursor(session: Session, study_id: int, spec: StudySpec) -> int:
    """How many grid points the study has handed out: grid points are enqueued rows at
    positions after the spec's own enqueued configurations (0 .. len-1); re-runs sit at -1."""
    first = len(spec.enqueue)
    tops = [
        session.scalar(
            select(func.max(EnqueuedConfig.position)).where(
                EnqueuedConfig.study_id == study_id, EnqueuedConfig.claimed.is_(flag)
            )
        )
        for flag in (True, False)  # two seeks of the (study, claimed, position) index
    ]
    top = max((p for p in tops if p is not None), default=-1)
    return max(top + 1, first) - first


def _next_grid_point(
    session: Session, study_id: int, spec: StudySpec, optuna_study_id: int
) -> EnqueuedConfig | None:
    """The study's next grid point as a claimed enqueued row; None once all were handed out.
    Runs in the claim's transaction, which holds the study's row lock."""
    size = grid_size(spec)
    assert size is not None
    index = _grid_cursor(session, study_id, spec)
    if index >= size:
        return None
    seed = spec.sampler.seed if spec.sampler.seed is not None else optuna_study_id
    row = EnqueuedConfig(
        study_id=study_id,
        position=len(spec.enqueue) + index,
        params=grid_point(spec, index, seed),
        claimed=True,
    )
    session.add(row)
    session.flush()
    return row


def attach_trial(url: str, record_id: int, optuna_trial_id: int, number: int) -> bool:
    """Link the claim to its Optuna trial. False, and no link, if the claim was released
    meanwhile (its worker was declared dead before the link existed): the caller must not
    train it, or the study would run one trial more than its budget, and should close the
    trial with `orphans.close_unclaimed_trial`."""
    with session_scope(url) as session:
        result = session.execute(
            update(TrialRecord)
            .where(TrialRecord.id == record_id, TrialRecord.finished_at.is_(None))
            .values(optuna_trial_id=optuna_trial_id, number=number, state=TrialState.RUNNING)
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
    device_seconds: float | None = None,
    test_metrics: dict[str, float] | None = None,
) -> bool:
    """Mark a claimed trial finished with `state`, which must be its Optuna trial's final
    state; on failure give its slot back and count the failure. Returns False if it was
    already finished (e.g. by the reaper), so that a slot is never given back twice.

    `retry_params`: the failure was not the trial's fault (its worker died or stopped), so
    it is enqueued again with these parameters, up to the spec's `budget.max_retries`
    times, in the same transaction: exactly one re-run per failure. A trial that ends
    without a re-run loses its saved training state (`CHECKPOINT_KIND`), in the same
    transaction; a re-run resumes from it (`worker.resume`). `test_metrics`: the test
    split's metrics by name (`trainer.evaluate_test`).

    `device_seconds`: the device time the trial used, recorded on it and added to the
    study's (which the device-hour budget limits)."""
    now = utcnow()
    with session_scope(url) as session:
        result = session.execute(
            update(TrialRecord)
            .where(TrialRecord.id == record_id, TrialRecord.finished_at.is_(None))
            .values(
                state=state,
                error=error,
                test_accuracy=test_accuracy,
                test_metrics=test_metrics or None,
                finished_at=now,
                device_seconds=device_seconds,
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        record = session.get(TrialRecord, record_id)
        assert record is not None
        values: dict[str, Any] = {"n_running": Study.n_running - 1, "updated_at": now}
        if device_seconds:
            values["device_seconds"] = Study.device_seconds + device_seconds
        if state == TrialState.FAIL:
            values.update(slots_used=Study.slots_used - 1, n_failed=Study.n_failed + 1)
        session.execute(update(Study).where(Study.id == record.study_id).values(**values))
        retried = state == TrialState.FAIL and bool(retry_params)
        retried = retried and enqueue_retry(session, record, retry_params or {})
        if not retried and record.optuna_trial_id is not None:
            # Its saved training state is only for a re-run to resume from.
            session.execute(
                delete(Artifact).where(
                    Artifact.trial_id == record.optuna_trial_id, Artifact.kind == CHECKPOINT_KIND
                )
            )
        settle_status(session, record.study_id)
    return True


def release_claim(url: str, record_id: int, reason: str) -> bool:
    """Give back a claim whose worker died before creating its Optuna trial: its slot, and
    its enqueued configuration (or grid point, or re-run) goes back to the queue as it was.
    Nothing ran, so no failure is counted. The record ends `fail` with `reason` (it is not
    listed as a trial: it has no Optuna trial). False if the claim had been attached to an
    Optuna trial meanwhile, or finished."""
    now = utcnow()
    with session_scope(url) as session:
        result = session.execute(
            update(TrialRecord)
            .where(
                TrialRecord.id == record_id,
                TrialRecord.finished_at.is_(None),
                TrialRecord.optuna_trial_id.is_(None),
            )
            .values(state=TrialState.FAIL, error=reason, finished_at=now)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        record = session.get(TrialRecord, record_id)
        assert record is not None
        session.execute(
            update(Study)
            .where(Study.id == record.study_id)
            .values(n_running=Study.n_running - 1, slots_used=Study.slots_used - 1, updated_at=now)
        )
        if record.enqueued_id is not None:
            session.execute(
                update(EnqueuedConfig)
                .where(EnqueuedConfig.id == record.enqueued_id)
                .values(claimed=False)
            )
        settle_status(session, record.study_id)
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


def settle_status(session: Session, study_id: int) -> None:
    """Bring a running study's status up to date, in the caller's transaction (the one that
    finished or released a trial): `completed` once the budget is finished, the deadline
    passed, the device-hour budget is used up with nothing running, or the grid is used up
    with nothing running or queued; `failed` past `max_failed_trials`."""
    # populate_existing: the counters the caller's UPDATE just changed.
    study = session.get(Study, study_id, with_for_update=True, populate_existing=True)
    if study is None or study.status != StudyState.RUNNING:
        return
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = session.scalar(
        select(func.count())
        .select_from(TrialRecord)
        .where(TrialRecord.study_id == study_id, TrialRecord.state.in_(done))
    )
    spec = load_spec(study.spec)
    max_failed = spec.budget.max_failed_trials
    if max_failed is None:
        max_failed = study.n_trials
    now = utcnow()
    past_deadline = study.deadline_at is not None and study.deadline_at <= now
    # The device-hour budget stops claims; the study ends once its last trial finished.
    out_of_time = (
        study.device_seconds_limit is not None
        and study.device_seconds >= study.device_seconds_limit
        and study.n_running == 0
    )
    ended = (finished or 0) >= study.n_trials or past_deadline or out_of_time
    if ended or _grid_done(session, study, spec):
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
    else:
        return
    record_status_event(session, study)  # its webhook event, if the spec asks


def _grid_done(session: Session, study: Study, spec: StudySpec) -> bool:
    """A grid study with every point handed out, none queued again and none running."""
    size = grid_size(spec)
    if size is None or study.n_running > 0:
        return False
    queued = session.scalar(
        select(EnqueuedConfig.id)
        .where(EnqueuedConfig.study_id == study.id, EnqueuedConfig.claimed.is_(False))
        .limit(1)
    )
    return queued is None and _grid_cursor(session, study.id, spec) >= size


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
    """Finish the unfinished claims of a worker that is not training them (dead, stopped,
    or it lost the database): each is released if its Optuna trial was never created, else
    that trial is failed in Optuna and the record follows (re-run with its parameters)."""
    with session_scope(url) as session:
        orphans = session.execute(
            select(TrialRecord.id, TrialRecord.optuna_trial_id).where(
                TrialRecord.worker_id == worker_id, TrialRecord.finished_at.is_(None)
            )
        ).all()
    for record_id, optuna_trial_id in orphans:
        if optuna_trial_id is None:
            optuna_trial_id = link_created_trial(url, record_id)
        if optuna_trial_id is None:
            if release_claim(url, record_id, reason):
                log.warning("claim %s of worker %s released (%s)", record_id, worker_id, reason)
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
        state = fail_attached(url, record_id, optuna_trial_id, reason)
        log.warning("trial record %s of worker %s -> %s (%s)", record_id, worker_id, state, reason)


def link_created_trial(url: str, record_id: int) -> int | None:
    """The Optuna trial created for the unattached claim `record_id` (found by its
    `CLAIM_ATTR`), linked to the claim now; None if none was created."""
    T, A = om.TrialModel, om.TrialSystemAttributeModel
    with session_scope(url) as session:
        optuna_study_id = session.scalar(
            select(Study.optuna_study_id)
            .join(TrialRecord, TrialRecord.study_id == Study.id)
            .where(TrialRecord.id == record_id)
        )
        found = session.execute(
            select(T.trial_id, T.number)
            .join(A, and_(A.trial_id == T.trial_id, A.key == CLAIM_ATTR))
            .where(T.study_id == optuna_study_id, A.value_json == json.dumps(record_id))
        ).first()
        if found is None:
            return None
        session.execute(
            update(TrialRecord)
            .where(TrialRecord.id == record_id, TrialRecord.optuna_trial_id.is_(None))
            .values(optuna_trial_id=found.trial_id, number=found.number)
        )
        return int(found.trial_id)


def fail_attached(url: str, record_id: int, optuna_trial_id: int, reason: str) -> TrialState:
    """Fail the claim's Optuna trial, then its record, re-running its parameters (the
    failure was its worker's, not its own); the state recorded. If Optuna already had the
    trial finished (its worker died between telling Optuna and recording it), the record
    takes Optuna's state and keeps its slot."""
    storage = get_storage(url)
    state = TrialState.FAIL
    error: str | None = reason
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # read below
        storage.set_trial_state_values(optuna_trial_id, optuna.trial.TrialState.FAIL)
    trial = storage.get_trial(optuna_trial_id)
    if trial.state != optuna.trial.TrialState.FAIL:
        state, error = TrialState(trial.state.name.lower()), None
    # What the trial was to run: the claim's fixed parameters (an enqueued configuration, a
    # grid point, a re-run), then whatever its sampler had suggested.
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    finish_record(url, record_id, state, error=error, retry_params=params or None)
    return state
