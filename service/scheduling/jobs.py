"""The learning-curve job queue (`hpo_learning_curves`), on the trial claims' pattern.

A job is claimed with one conditional UPDATE (`WHERE state = 'queued'`) that SQLite and
PostgreSQL both apply atomically, so two workers never run the same job. A job whose worker
died (declared dead by the heartbeat reaper in service.scheduling.claims, or by `hpo serve`)
goes back to the queue and runs again, up to MAX_ATTEMPTS times. What a job computes is
service.analysis.learning_curves' business; this module only moves jobs between states.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import LearningCurveJob, Study, Worker, utcnow
from service.core.states import JobState, WorkerState

log = logging.getLogger(__name__)

ACTIVE = (JobState.QUEUED, JobState.RUNNING)
# A job whose workers keep dying (e.g. out of memory) fails after this many starts.
MAX_ATTEMPTS = 3
CLAIM_CANDIDATES = 5  # queued jobs tried per poll when other workers win the race


def active_job_id(session: Session, study_id: int) -> int | None:
    """The id of the study's queued or running job, if it has one (at most one)."""
    return session.scalar(
        select(LearningCurveJob.id).where(
            LearningCurveJob.study_id == study_id, LearningCurveJob.state.in_(ACTIVE)
        )
    )


def requeue_orphans(url: str, worker_id: int) -> None:
    """Jobs running on a worker that is not running them any more go back to the queue:
    workers marked dead or stopped, deleted workers, and this worker's own (it only asks
    while it runs no job). A job requeued for the MAX_ATTEMPTS-th time fails instead."""
    not_running = select(Worker.id).where(Worker.status != WorkerState.RUNNING)
    orphaned = (
        LearningCurveJob.state == JobState.RUNNING,
        or_(
            LearningCurveJob.worker_id.is_(None),
            LearningCurveJob.worker_id == worker_id,
            LearningCurveJob.worker_id.in_(not_running),
        ),
    )
    with session_scope(url) as session:
        ids = session.scalars(select(LearningCurveJob.id).where(*orphaned)).all()
        if not ids:
            return
        session.execute(
            update(LearningCurveJob)
            .where(LearningCurveJob.id.in_(ids), *orphaned)
            .values(state=JobState.QUEUED, worker_id=None)
        )
        session.execute(
            update(LearningCurveJob)
            .where(
                LearningCurveJob.id.in_(ids),
                LearningCurveJob.state == JobState.QUEUED,
                LearningCurveJob.attempts >= MAX_ATTEMPTS,
            )
            .values(
                state=JobState.FAIL,
                finished_at=utcnow(),
                error=f"its worker died {MAX_ATTEMPTS} times; giving up",
            )
        )
    log.warning("learning-curve jobs %s went back to the queue: their worker is gone", ids)


def claim_job(
    url: str, worker_id: int, only: Sequence[str] | None = None
) -> LearningCurveJob | None:
    """The oldest queued job, now running on `worker_id` (its attempts counted and its
    points cleared), or None when no job is queued or other workers won them all. `only`
    restricts the jobs to those of these study names (or ids), like the worker's trials."""
    requeue_orphans(url, worker_id)
    query = (
        select(LearningCurveJob.id)
        .where(LearningCurveJob.state == JobState.QUEUED)
        .order_by(LearningCurveJob.id)
        .limit(CLAIM_CANDIDATES)
    )
    if only is not None:
        refs = [int(ref) for ref in only if ref.isdigit()]
        studies = select(Study.id).where(or_(Study.name.in_(list(only)), Study.id.in_(refs)))
        query = query.where(LearningCurveJob.study_id.in_(studies))
    with session_scope(url) as session:
        ids = session.scalars(query).all()
    for job_id in ids:
        with session_scope(url) as session:
            claimed = session.execute(
                update(LearningCurveJob)
                .where(LearningCurveJob.id == job_id, LearningCurveJob.state == JobState.QUEUED)
                .values(
                    state=JobState.RUNNING,
                    worker_id=worker_id,
                    started_at=utcnow(),
                    attempts=LearningCurveJob.attempts + 1,
                    points=[],
                )
            )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                return session.get(LearningCurveJob, job_id)
    return None


def update_running_job(url: str, job_id: int, worker_id: int, values: dict[str, Any]) -> None:
    """Set `values` (progress, or the final state) on a job `worker_id` is running.

    Conditional: a job requeued meanwhile (this worker was declared dead) is not ours, and
    is left alone.
    """
    with session_scope(url) as session:
        session.execute(
            update(LearningCurveJob)
            .where(
                LearningCurveJob.id == job_id,
                LearningCurveJob.worker_id == worker_id,
                LearningCurveJob.state == JobState.RUNNING,
            )
            .values(**values)
        )


def finish_job(url: str, job_id: int, worker_id: int, state: JobState, **values: Any) -> None:
    """End a running job in `state` (complete or fail) with `values` (its result or
    error), stamping its finish time."""
    update_running_job(url, job_id, worker_id, {"state": state, "finished_at": utcnow(), **values})


def release_job(url: str, job_id: int, worker_id: int) -> None:
    """Hand a running job back to the queue: its worker is stopping."""
    update_running_job(url, job_id, worker_id, {"state": JobState.QUEUED, "worker_id": None})
