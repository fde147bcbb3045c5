"""Data-size learning-curve jobs: queued over REST, run by the normal workers.

A job trains a study's best configuration on growing fractions of the training split
(trainer.data_size) and concludes whether more data would help. Jobs are claimed like
trial slots, with one conditional UPDATE (`WHERE state = 'queued'`) that SQLite and
PostgreSQL both apply atomically, so two workers never run the same job. A job whose worker
died (declared dead by the heartbeat reaper in service.scheduling.claims, or by `hpo serve`) goes
back to the queue and runs again, up to MAX_ATTEMPTS times.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from service.analysis.schemas import LearningCurve
from service.core.db.engine import session_scope
from service.core.db.models import LearningCurveJob, Study, Worker, utcnow
from service.core.errors import JobActive, NoCompletedTrial, NoLearningCurve
from service.datasets.spec import DatasetSpec
from service.studies.service import get_best, get_study_row
from service.studies.spec import StudySpec
from trainer import TensorData, TrainConfig
from trainer.data_size import SizePoint, conclude, learning_curve
from trainer.loop import EpochMetrics

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
# A job whose workers keep dying (e.g. out of memory) fails after this many starts.
MAX_ATTEMPTS = 3
CLAIM_CANDIDATES = 5  # queued jobs tried per poll when other workers win the race


class JobStopped(Exception):
    """The worker is stopping: the job goes back to the queue."""


def to_schema(job: LearningCurveJob) -> LearningCurve:
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


def create_job(url: str, study_id: int, fractions: list[float]) -> LearningCurve:
    with session_scope(url) as session:
        best = get_best(session, study_id)  # 404 for an unknown study
    if best is None:
        raise NoCompletedTrial(study_id)
    with session_scope(url) as session:
        # Lock the study row so two concurrent POSTs cannot both queue a job.
        session.get(Study, study_id, with_for_update=True)
        active = session.scalar(
            select(LearningCurveJob.id).where(
                LearningCurveJob.study_id == study_id, LearningCurveJob.state.in_(ACTIVE)
            )
        )
        if active is not None:
            raise JobActive(study_id, active)
        job = LearningCurveJob(
            study_id=study_id,
            source_trial_id=best.trial_id,
            config=best.config,
            fractions=sorted(set(fractions)),
            state="queued",
            attempts=0,
            points=[],
            created_at=utcnow(),
        )
        session.add(job)
        session.flush()
        return to_schema(job)


def latest_job(url: str, study_id: int) -> LearningCurve:
    with session_scope(url) as session:
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


def requeue_orphans(url: str, worker_id: int) -> None:
    """Jobs running on a worker that is not running them any more go back to the queue:
    workers marked dead or stopped, deleted workers, and this worker's own (it only asks
    while it runs no job)."""
    not_running = select(Worker.id).where(Worker.status != "running")
    orphaned = (
        LearningCurveJob.state == "running",
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
            .values(state="queued", worker_id=None)
        )
        session.execute(
            update(LearningCurveJob)
            .where(
                LearningCurveJob.id.in_(ids),
                LearningCurveJob.state == "queued",
                LearningCurveJob.attempts >= MAX_ATTEMPTS,
            )
            .values(
                state="fail",
                finished_at=utcnow(),
                error=f"its worker died {MAX_ATTEMPTS} times; giving up",
            )
        )
    log.warning("learning-curve jobs %s went back to the queue: their worker is gone", ids)


def claim_job(url: str, worker_id: int) -> LearningCurveJob | None:
    requeue_orphans(url, worker_id)
    with session_scope(url) as session:
        ids = session.scalars(
            select(LearningCurveJob.id)
            .where(LearningCurveJob.state == "queued")
            .order_by(LearningCurveJob.id)
            .limit(CLAIM_CANDIDATES)
        ).all()
    for job_id in ids:
        with session_scope(url) as session:
            claimed = session.execute(
                update(LearningCurveJob)
                .where(LearningCurveJob.id == job_id, LearningCurveJob.state == "queued")
                .values(
                    state="running",
                    worker_id=worker_id,
                    started_at=utcnow(),
                    attempts=LearningCurveJob.attempts + 1,
                    points=[],
                )
            )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                return session.get(LearningCurveJob, job_id)
    return None


def _finish(url: str, job_id: int, worker_id: int, values: dict[str, Any]) -> None:
    # Conditional: a job requeued meanwhile (this worker was declared dead) is not ours.
    with session_scope(url) as session:
        session.execute(
            update(LearningCurveJob)
            .where(
                LearningCurveJob.id == job_id,
                LearningCurveJob.worker_id == worker_id,
                LearningCurveJob.state == "running",
            )
            .values(**values)
        )


def run_job(
    url: str,
    worker_id: int,
    job: LearningCurveJob,
    data_for: Callable[[DatasetSpec], TensorData],
    stopping: threading.Event,
) -> None:
    with session_scope(url) as session:
        spec = StudySpec.model_validate(get_study_row(session, job.study_id).spec)
    points: list[dict[str, Any]] = []

    def on_epoch(_m: EpochMetrics) -> bool:
        if stopping.is_set():
            raise JobStopped("worker stopping; the job goes back to the queue")
        return False

    def on_point(point: SizePoint) -> None:
        points.append(point.to_dict())
        _finish(url, job.id, worker_id, {"points": list(points)})  # progress, one write per size

    log.info("learning curve %s of study %s: fractions %s", job.id, spec.name, job.fractions)
    try:
        config = TrainConfig.from_params(job.config, max_epochs=spec.objective.max_epochs)
        result = learning_curve(
            config, data_for(spec.dataset), job.fractions, on_epoch=on_epoch, on_point=on_point
        )
        verdict = conclude(result, spec.objective.metric)
    except JobStopped:
        _finish(url, job.id, worker_id, {"state": "queued", "worker_id": None})
        return
    except SQLAlchemyError:
        raise  # the worker backs off; its next claim puts this job back in the queue
    except Exception as e:
        log.exception("learning curve %s failed", job.id)
        error = f"{type(e).__name__}: {e}"
        _finish(url, job.id, worker_id, {"state": "fail", "error": error, "finished_at": utcnow()})
        return
    done = {"state": "complete", "result": verdict, "finished_at": utcnow()}
    _finish(url, job.id, worker_id, done)
    log.info("learning curve %s: %s", job.id, verdict["verdict"])


def run_next_job(
    url: str,
    worker_id: int | None,
    data_for: Callable[[DatasetSpec], TensorData],
    stopping: threading.Event,
) -> bool:
    """Run one queued learning-curve job if there is one; True if it ran one."""
    if worker_id is None:
        return False
    job = claim_job(url, worker_id)
    if job is None:
        return False
    run_job(url, worker_id, job, data_for, stopping)
    return True
