"""Data-size learning-curve jobs: queued over REST, run by the normal workers.

A job trains a study's best configuration on growing fractions of the training split
(trainer.data_size) and concludes whether more data would help. The queue itself (claims,
requeueing the jobs of dead workers, at most MAX_ATTEMPTS starts) is
service.scheduling.jobs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.analysis.schemas import LearningCurve
from service.core.db.engine import session_scope
from service.core.db.models import LearningCurveJob, Study, utcnow
from service.core.errors import JobActive, NoCompletedTrial, NoLearningCurve
from service.core.states import JobState
from service.datasets.spec import DatasetSpec
from service.scheduling.jobs import (
    active_job_id,
    claim_job,
    finish_job,
    release_job,
    update_running_job,
)
from service.studies.model_families import builder_for
from service.studies.service import get_best, get_study_row
from service.studies.spec import load_spec, train_config
from trainer import TensorData
from trainer.data_size import SizePoint, conclude, learning_curve
from trainer.loop import EpochMetrics

log = logging.getLogger(__name__)


class JobStopped(Exception):
    """The worker is stopping: the job goes back to the queue."""


def to_schema(job: LearningCurveJob) -> LearningCurve:
    """The API's view of a job row."""
    result = job.result or {}
    return LearningCurve(
        id=job.id,
        study_id=job.study_id,
        state=job.state,
        source_trial_id=job.source_trial_id,
        config=job.config,
        fractions=job.fractions,
        attempts=job.attempts,
        points=job.points,
        verdict=result.get("verdict"),
        explanation=result.get("explanation"),
        evidence=result.get("evidence"),
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def create_job(session: Session, study_id: int, fractions: list[float]) -> LearningCurve:
    """Queue a learning curve of the study's best trial over `fractions` (each in (0, 1]),
    flushed for the caller to commit.

    Raises StudyNotFound, NoCompletedTrial (no best trial yet), or JobActive (the study
    already has a queued or running job).
    """
    best = get_best(session, study_id)  # 404 for an unknown study
    if best is None:
        raise NoCompletedTrial(study_id)
    # Lock the study row until the caller commits, so two concurrent POSTs cannot both
    # queue a job.
    session.get(Study, study_id, with_for_update=True)
    active = active_job_id(session, study_id)
    if active is not None:
        raise JobActive(study_id, active)
    job = LearningCurveJob(
        study_id=study_id,
        source_trial_id=best.trial_id,
        config=best.config,
        fractions=sorted(set(fractions)),
        state=JobState.QUEUED,
        attempts=0,
        points=[],
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return to_schema(job)


def latest_job(session: Session, study_id: int) -> LearningCurve:
    """The study's newest job; raises StudyNotFound, or NoLearningCurve if it has none."""
    get_study_row(session, study_id)
    job = session.scalars(
        select(LearningCurveJob)
        .where(LearningCurveJob.study_id == study_id)
        .order_by(LearningCurveJob.id.desc())
        .limit(1)
    ).first()
    if job is None:
        raise NoLearningCurve(study_id)
    return to_schema(job)


def run_job(
    url: str,
    worker_id: int,
    job: LearningCurveJob,
    data_for: Callable[[DatasetSpec], TensorData],
    stopping: threading.Event,
) -> None:
    """Train the claimed `job` at each fraction and store its points and verdict.

    A set `stopping` hands the job back to the queue; a training error fails it; a database
    error propagates (the worker backs off, and its next claim requeues the job).
    """
    with session_scope(url) as session:
        spec = load_spec(get_study_row(session, job.study_id).spec)
    points: list[dict[str, Any]] = []

    def on_epoch(_m: EpochMetrics) -> bool:
        if stopping.is_set():
            raise JobStopped("worker stopping; the job goes back to the queue")
        return False

    def on_point(point: SizePoint) -> None:
        points.append(point.to_dict())
        update_running_job(url, job.id, worker_id, {"points": list(points)})  # one write per size

    log.info("learning curve %s of study %s: fractions %s", job.id, spec.name, job.fractions)
    try:
        # Seed 0, as learning curves always had: the source trial's number is not stored.
        config = train_config(spec, job.config, trial_number=0)
        result = learning_curve(
            config,
            data_for(spec.dataset),
            job.fractions,
            on_epoch=on_epoch,
            on_point=on_point,
            model_builder=builder_for(spec.model.family),
        )
        verdict = conclude(result, spec.objective.metric)
    except JobStopped:
        release_job(url, job.id, worker_id)
        return
    except SQLAlchemyError:
        raise  # the worker backs off; its next claim puts this job back in the queue
    except Exception as e:
        log.exception("learning curve %s failed", job.id)
        finish_job(url, job.id, worker_id, JobState.FAIL, error=f"{type(e).__name__}: {e}")
        return
    finish_job(url, job.id, worker_id, JobState.COMPLETE, result=verdict)
    log.info("learning curve %s: %s", job.id, verdict["verdict"])


def run_next_job(
    url: str,
    worker_id: int | None,
    data_for: Callable[[DatasetSpec], TensorData],
    stopping: threading.Event,
    only: Sequence[str] | None = None,
) -> bool:
    """Run one queued learning-curve job (of the studies named in `only`, when given) if
    there is one; True if it ran one."""
    if worker_id is None:
        return False
    job = claim_job(url, worker_id, only)
    if job is None:
        return False
    run_job(url, worker_id, job, data_for, stopping)
    return True
