"""Builds the FastAPI app."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from service import __version__
from service.app import http_policies, openapi
from service.app.auth import auth_required, authenticate
from service.app.dashboard import pages as dashboard
from service.app.router import api_router
from service.core.errors import InvalidInput, ServiceError, Unauthorized, json_safe
from service.core.settings import Settings, get_settings
from service.core.types import MAX_COUNT, text_problem

INTEGER = re.compile(r"[+-]?[0-9]+")


async def service_error(_request: Request, exc: Exception) -> JSONResponse:
    """Every expected failure of the domain, answered with its own status: the one place
    errors become HTTP. An `InvalidInput` naming a field answers in FastAPI's validation
    shape, like a refused request body."""
    assert isinstance(exc, ServiceError)
    if isinstance(exc, InvalidInput) and exc.field is not None:
        return JSONResponse({"detail": exc.validation_errors()}, 422)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse({"detail": json_safe(str(exc))}, exc.status_code, headers=headers)


async def request_invalid(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's answer to a refused request (422, one entry per problem), except that the
    echoed `input` and `ctx` are made `json_safe`: a body may hold NaN, 1e400 (infinity) or a
    lone surrogate, which strict JSON in UTF-8 cannot encode back."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": json_safe(list(exc.errors()))}, 422)


def refuse_unstorable_text(request: Request) -> None:
    """A path or query value with a control character names nothing any database holds
    (PostgreSQL refuses NUL outright, SQLite would look it up): a 422 naming each such
    parameter, the same on both, before a route runs."""
    errors = [
        {"type": "value_error", "loc": [where, name], "msg": problem, "input": value}
        for where, params in (
            ("path", request.path_params.items()),
            ("query", request.query_params.multi_items()),
        )
        for name, value in params
        if isinstance(value, str) and (problem := text_problem(value)) is not None
    ]
    if errors:
        raise RequestValidationError(errors)


async def out_of_range(request: Request, exc: Exception) -> JSONResponse:
    """An id, offset or count past what the database stores (PostgreSQL INTEGER: 32 bits,
    SQLite: 64 bits) names nothing: a 422 naming each path or query parameter out of range
    (the whole request when none is), instead of a 500."""
    errors: list[dict[str, Any]] = [
        {
            "type": "less_than_equal",
            "loc": [where, name],
            "msg": f"must be between {-MAX_COUNT - 1} and {MAX_COUNT}",
            "input": value,
        }
        for where, params in (
            ("path", request.path_params.items()),
            ("query", request.query_params.multi_items()),
        )
        for name, value in params
        if isinstance(value, str) and INTEGER.fullmatch(value) and abs(int(value)) > MAX_COUNT
    ]
    if not errors:
        errors = [
            {
                "type": "value_error",
                "loc": ["request"],
                "msg": f"a value in the request is out of range ({type(exc).__name__})",
                "input": None,
            }
        ]
    return JSONResponse({"detail": json_safe(errors)}, 422)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="HPO service",
        version=__version__,
        description="Hyperparameter optimization for neural-network training.",
        # every route, including ones added later
        dependencies=[Depends(authenticate), Depends(refuse_unstorable_text)],
        generate_unique_id_function=openapi.operation_id,  # `create_study`, not `..._post`
    )
    app.state.settings = settings or get_settings()
    app.state.auth_required = auth_required(app.state.settings)
    http_policies.install(app, app.state.settings)
    app.include_router(api_router)
    dashboard.install(app)
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(OverflowError, out_of_range)
    app.add_exception_handler(DataError, out_of_range)
    openapi.install(app)  # each route's error answers, derived from what answers them
    return app
