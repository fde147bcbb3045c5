"""/metrics: Prometheus text format, read from the database at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.app.deps import SettingsDep
from service.app.metrics import registry_for

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def metrics(settings: SettingsDep) -> Response:
    """Trials by state, workers alive, trial durations, queue depth."""
    registry = registry_for(settings.database_url, settings.worker_grace_seconds)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
