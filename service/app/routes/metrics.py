"""/metrics: Prometheus text format, read from the database at scrape time.

With auth on it needs a token of role `metrics` (or any higher role); `HPO_METRICS_BIND`
serves the same text without a token on an address of the operator's choosing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.app.deps import SettingsDep
from service.app.metrics import registry_for, separate_listener


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs the separate metrics listener (if configured) while the app runs."""
    with separate_listener(app.state.settings):  # stopping waits for its 0.5 s poll
        yield


router = APIRouter(tags=["metrics"], lifespan=lifespan)


@router.get("/metrics", response_class=Response)
def metrics(settings: SettingsDep) -> Response:
    """Trials by state, workers alive, trial durations, queue depth."""
    return Response(generate_latest(registry_for(settings)), media_type=CONTENT_TYPE_LATEST)
