"""Worker queries: who trains what, and who has gone silent."""

from __future__ import annotations

import socket
from datetime import timedelta

from sqlalchemy import func, select

from service.core.db.engine import session_scope
from service.core.db.models import Worker, utcnow
from service.studies.schemas import WorkerInfo


def list_workers(
    url: str, grace_seconds: float, status: str | None = None, limit: int = 200
) -> list[WorkerInfo]:
    """Workers, newest first. One still marked running whose heartbeat is older than the
    grace period is shown dead: peers mark it so in the table at their next reaping."""
    now = utcnow()
    with session_scope(url) as session:
        rows = session.scalars(select(Worker).order_by(Worker.id.desc())).all()
    out: list[WorkerInfo] = []
    for w in rows:
        age = max((now - w.heartbeat_at).total_seconds(), 0.0)
        shown = "dead" if w.status == "running" and age > grace_seconds else w.status
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
                current_trial_id=None if shown != "running" else w.current_trial_id,
                heartbeat_age_seconds=round(age, 3),
                started_at=w.started_at,
                version=w.version,
            )
        )
        if len(out) >= limit:
            break
    return out


def local_workers_alive(url: str, grace_seconds: float) -> int:
    """Workers of this host with a heartbeat within the grace period (a health check)."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with session_scope(url) as session:
        n = session.scalar(
            select(func.count())
            .select_from(Worker)
            .where(
                Worker.host == socket.gethostname(),
                Worker.status == "running",
                Worker.heartbeat_at >= cutoff,
            )
        )
    return int(n or 0)
