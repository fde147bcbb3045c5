"""The workers registry (`hpo_workers`): a worker registers, beats, names its current trial
and records its stop; readers ask who trains what and who has gone silent."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service import __version__
from service.core.db.engine import session_scope
from service.core.db.models import Worker, utcnow
from service.core.states import WorkerState
from service.scheduling.claims import fail_orphans
from service.studies.schemas import WorkerInfo


def register_worker(
    url: str, *, device: str, gpu_name: str | None, gpu_memory_mb: int | None
) -> int:
    """Add this process (host, pid, version) as a running worker on `device`; its id."""
    now = utcnow()
    with session_scope(url) as session:
        worker = Worker(
            host=socket.gethostname(),
            pid=os.getpid(),
            device=device,
            gpu_name=gpu_name,
            gpu_memory_mb=gpu_memory_mb,
            version=__version__,
            status=WorkerState.RUNNING,
            started_at=now,
            heartbeat_at=now,
        )
        session.add(worker)
        session.flush()
        return worker.id


def heartbeat(url: str, worker_id: int) -> None:
    """Record a heartbeat. The status too: a worker declared dead during a long database
    outage is alive again."""
    _set(url, worker_id, heartbeat_at=utcnow(), status=WorkerState.RUNNING)


def set_current_trial(url: str, worker_id: int, trial_id: int | None) -> None:
    """Name the Optuna trial id the worker trains now (None: none)."""
    _set(url, worker_id, current_trial_id=trial_id)


def record_stop(url: str, worker_id: int, reason: str) -> None:
    """Fail the trials the worker left unfinished (with `reason`) and mark it stopped."""
    fail_orphans(url, worker_id, reason)
    _set(url, worker_id, status=WorkerState.STOPPED, current_trial_id=None, heartbeat_at=utcnow())


def _set(url: str, worker_id: int, **values: object) -> None:
    with session_scope(url) as session:
        session.execute(update(Worker).where(Worker.id == worker_id).values(**values))


def list_workers(
    session: Session, grace_seconds: float, status: str | None = None, limit: int = 200
) -> list[WorkerInfo]:
    """Workers, newest first. One still marked running whose heartbeat is older than the
    grace period is shown dead: peers mark it so in the table at their next reaping."""
    now = utcnow()
    rows = session.scalars(select(Worker).order_by(Worker.id.desc())).all()
    out: list[WorkerInfo] = []
    for w in rows:
        age = max((now - w.heartbeat_at).total_seconds(), 0.0)
        dead = w.status == WorkerState.RUNNING and age > grace_seconds
        shown = WorkerState.DEAD if dead else w.status
        if status is not None and shown != status:
            continue
        out.append(
            WorkerInfo(
                id=w.id,
                host=w.host,
                pid=w.pid,
                device=w.device,
                gpu_name=w.gpu_name,
                gpu_memory_mb=w.gpu_memory_mb,
                status=shown,
                current_trial_id=None if shown != WorkerState.RUNNING else w.current_trial_id,
                heartbeat_age_seconds=round(age, 3),
                started_at=w.started_at,
                version=w.version,
            )
        )
        if len(out) >= limit:
            break
    return out


def local_running_workers(url: str, pid: int) -> list[int]:
    """Ids of the workers of this host and process id still marked running."""
    with session_scope(url) as session:
        ids = session.scalars(
            select(Worker.id).where(
                Worker.host == socket.gethostname(),
                Worker.pid == pid,
                Worker.status == WorkerState.RUNNING,
            )
        ).all()
    return list(ids)


def local_workers_alive(url: str, grace_seconds: float) -> int:
    """Workers of this host with a heartbeat within the grace period (a health check)."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with session_scope(url) as session:
        n = session.scalar(
            select(func.count())
            .select_from(Worker)
            .where(
                Worker.host == socket.gethostname(),
                Worker.status == WorkerState.RUNNING,
                Worker.heartbeat_at >= cutoff,
            )
        )
    return int(n or 0)
