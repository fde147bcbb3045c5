"""Builds the FastAPI app."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from service import __version__
from service.app import http_policies
from service.app.auth import auth_required, authenticate
from service.app.dashboard import pages as dashboard
from service.app.router import api_router
from service.core.errors import StudyNotFound, TrialNotFound
from service.core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="HPO service",
        version=__version__,
        description="Hyperparameter optimization for neural-network training.",
        dependencies=[Depends(authenticate)],  # every route, including ones added later
    )
    app.state.settings = settings or get_settings()
    app.state.auth_required = auth_required(app.state.settings)
    http_policies.install(app, app.state.settings)
    app.include_router(api_router)
    dashboard.install(app)

    @app.exception_handler(StudyNotFound)
    @app.exception_handler(TrialNotFound)
    async def not_found(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    return app
