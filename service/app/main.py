"""Builds the FastAPI app."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from service import __version__
from service.app import http_policies
from service.app.auth import auth_required, authenticate
from service.app.dashboard import pages as dashboard
from service.app.router import api_router
from service.core.errors import InvalidInput, ServiceError, Unauthorized
from service.core.settings import Settings, get_settings


async def service_error(_request: Request, exc: Exception) -> JSONResponse:
    """Every expected failure of the domain, answered with its own status: the one place
    errors become HTTP. An `InvalidInput` naming a field answers in FastAPI's validation
    shape, like a refused request body."""
    assert isinstance(exc, ServiceError)
    if isinstance(exc, InvalidInput) and exc.field is not None:
        return JSONResponse({"detail": jsonable_encoder(exc.validation_errors())}, 422)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse({"detail": str(exc)}, exc.status_code, headers=headers)


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
    app.add_exception_handler(ServiceError, service_error)
    return app
