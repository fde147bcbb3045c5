"""The workers registry (`hpo_workers`): a worker registers, beats, names its current trial
and records its stop; readers ask who trains what and who has gone silent."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service import __version__
from service.core.db.engine import session_scope
from service.core.db.models import Worker, utcnow
from service.core.processes import (
    in_this_scope,
    process_alive,
    process_start,
    supervisor_from_env,
)
from service.core.states import WorkerState
from service.scheduling.claims import fail_orphans
from service.studies.schemas import WorkerInfo


def register_worker(
    url: str, *, device: str, gpu_name: str | None, gpu_memory_mb: int | None
) -> int:
    """Add this process (host, pid and its start, version) as a running worker on `device`,
    with the supervisor that started it (from `HPO_SUPERVISOR`, if any); its id."""
    now = utcnow()
    supervisor = supervisor_from_env()
    with session_scope(url) as session:
        worker = Worker(
            host=socket.gethostname(),
            pid=os.getpid(),
            process_start=process_start(os.getpid()),
            supervisor_pid=supervisor[0] if supervisor else None,
            supervisor_start=supervisor[1] if supervisor else None,
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


def heartbeat(url: str, worker_id: int, device: Mapping[str, int | float] | None = None) -> None:
    """Record a heartbeat. The status too: a worker declared dead during a long database
    outage is alive again. `device`: what the worker read of its device
    (`gpu_memory_used_mb`, `gpu_utilization`; `worker.device_stats`), if anything."""
    _set(url, worker_id, heartbeat_at=utcnow(), status=WorkerState.RUNNING, **(device or {}))


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


@dataclass(frozen=True)
class OrphanedWorker:
    """A worker record of this host whose supervisor has died: `alive` when its process
    (`pid`, `process_start`) still runs."""

    id: int
    pid: int
    process_start: str
    alive: bool


def orphaned_local_workers(url: str) -> list[OrphanedWorker]:
    """Workers of this host still marked running that a supervisor started and whose
    supervisor process is gone (exited, killed, or its pid now names another process).

    Only records this process can judge are considered: a start time recorded in this
    boot and pid namespace (a worker of another container with the same host name, or of
    a previous boot, is left to the heartbeat reaper)."""
    with session_scope(url) as session:
        rows = session.execute(
            select(
                Worker.id,
                Worker.pid,
                Worker.process_start,
                Worker.supervisor_pid,
                Worker.supervisor_start,
            ).where(
                Worker.host == socket.gethostname(),
                Worker.status == WorkerState.RUNNING,
                Worker.supervisor_pid.is_not(None),
            )
        ).all()
    orphans = []
    for r in rows:
        if not in_this_scope(r.process_start) or process_alive(
            r.supervisor_pid, r.supervisor_start
        ):
            continue
        alive = process_alive(r.pid, r.process_start)
        orphans.append(OrphanedWorker(r.id, r.pid, r.process_start, alive))
    return orphans
