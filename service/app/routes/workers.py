"""/api/workers"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.app.deps import SessionDep, SettingsDep
from service.scheduling import workers as worker_service
from service.studies.schemas import WorkerInfo

router = APIRouter(prefix="/api/workers", tags=["workers"])


@router.get("", response_model=list[WorkerInfo])
def list_workers(
    settings: SettingsDep,
    session: SessionDep,
    status: Annotated[str | None, Query(pattern="^(running|stopped|dead)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[WorkerInfo]:
    """Worker processes, newest first, with their current trial and heartbeat age."""
    return worker_service.list_workers(session, settings.worker_grace_seconds, status, limit)
