"""Builds the FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service import __version__
from service.api.router import api_router
from service.dashboard import pages as dashboard
from service.settings import Settings, get_settings
from service.studies import StudyNotFound
from service.trials import TrialNotFound


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="HPO service",
        version=__version__,
        description="Hyperparameter optimization for neural-network training.",
    )
    app.state.settings = settings or get_settings()
    app.include_router(api_router)
    dashboard.install(app)

    @app.exception_handler(StudyNotFound)
    @app.exception_handler(TrialNotFound)
    async def not_found(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    return app
