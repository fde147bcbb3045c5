"""The OpenAPI document: stable operation ids and the error answers each route can give.

Operation ids are the route functions' names (`create_study`, `list_trials`), not FastAPI's
`create_study_api_studies_post`: a client generated from the schema keeps its method names
when a path changes. tests/test_openapi.py holds the list, so a rename is a conscious one.

The error answers are derived here, in one place, from what answers them (the routes in
service/app/routes/ need not list them):

- 401, 403: with auth on, on every path `auth.is_protected` guards (`AuthGate` answers 401,
  `auth.authenticate` 403 when some role may not call it, the ownership dependencies 403 to
  another owner). Routes that need no token are not marked as secured.
- 404: a route with a path parameter (the study, trial or dataset it names may not exist).
- 409: the routes in `CONFLICTS`, whose service functions raise a `Conflict`.
- 413: a route that takes a request body (`http_policies.BodySizeLimit`).
- 422: every route (`main.refuse_unstorable_text` checks every path and query value, besides
  the route's own parameters); its body is FastAPI's list of problems or, for a refusal that
  names no field, one message.
- 429: with auth on, routes taking `http_policies.limit_submissions` (and `create_study`,
  whose owner quota answers 429 too).

Every error body is ``{"detail": ...}`` (`main.service_error`, `main.request_invalid`, the
middlewares' own answers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from service.access.tokens import ROLES, Principal
from service.app.auth import is_protected, needed_role
from service.app.http_policies import limit_submissions

# Operation ids of the routes whose service function raises a `core.errors.Conflict`.
CONFLICTS = frozenset(
    {
        "create_study",  # StudyExists
        "upload_dataset",  # DatasetExists
        "delete_dataset",  # DatasetInUse
        "start_learning_curve",  # NoCompletedTrial, JobActive
    }
)
# Statuses a route answers that the rules above cannot see: the token routes refuse everyone
# but admins even with auth off (403), and a revoke names its token in the body (404).
EXTRA_STATUSES: dict[str, frozenset[int]] = {
    "create_token": frozenset({403}),
    "list_tokens": frozenset({403}),
    "revoke_tokens": frozenset({403, 404}),
}
# Routes that answer 429 besides those rate-limited by `limit_submissions`.
QUOTAS = frozenset({"create_study"})  # studies.submission.check_quota: running studies/owner


class ErrorResponse(BaseModel):
    """An error: ``detail`` says what went wrong."""

    detail: str = Field(description="what went wrong, in one sentence")


class ValidationProblem(BaseModel):
    """One refused value: where it is (``["body", "budget", "n_trials"]``), why, what came."""

    loc: list[str | int] = Field(description="the value's location: body, path, query or form")
    msg: str
    type: str
    input: Any = Field(None, description="the value refused, made JSON-safe")


class ValidationErrorResponse(BaseModel):
    """A refused request: one problem per field, or one message when no field is to blame."""

    detail: list[ValidationProblem] | str


ERROR_DESCRIPTIONS = {
    401: "no valid bearer token: missing, malformed, unknown or revoked",
    403: "the token's role may not do this, or the resource belongs to another token",
    404: "no such resource (the message names it)",
    409: "the request conflicts with the resource's current state (the message says how)",
    413: "the request body is larger than HPO_MAX_REQUEST_BYTES",
    422: "a refused value: each problem names its location",
    429: "too many submissions by this token (Retry-After says when to retry), or too many "
    "running studies",
}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    429: {
        "Retry-After": {
            "schema": {"type": "integer"},
            "description": "seconds until the next submission is allowed (rate limit only)",
        }
    },
}
PATH_PARAM = re.compile(r"\{[^}]+\}")


def operation_id(route: APIRoute) -> str:
    """The operation id of a route: its function's name (`generate_unique_id_function`)."""
    return route.name


def _dependencies(dependant: Dependant) -> Iterator[Callable[..., Any] | None]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependencies(sub)


def error_statuses(path: str, method: str, route: APIRoute, auth_on: bool) -> list[int]:
    """The error statuses `method` on `path` (served by `route`, maybe under a router's
    prefix) can answer in an app whose auth is `auth_on`."""
    statuses = {422}
    if auth_on and is_protected(path):
        statuses.add(401)
        needed = needed_role(method, path)
        if any(not Principal(0, "", role).has(needed) for role in ROLES):
            statuses.add(403)
    if PATH_PARAM.search(path):
        statuses.add(404)
    if route.name in CONFLICTS:
        statuses.add(409)
    if route.body_field is not None:
        statuses.add(413)
    statuses |= EXTRA_STATUSES.get(route.name, frozenset())
    if auth_on and (
        route.name in QUOTAS or limit_submissions in set(_dependencies(route.dependant))
    ):
        statuses.add(429)
    return sorted(statuses)


def api_routes(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    """Every API route of `app` by (full path, lower-case method), routers included in
    routers flattened (FastAPI includes them lazily)."""
    return {
        (ctx.path_format, method.lower()): ctx.original_route
        for ctx in iter_route_contexts(app.routes)
        if isinstance(ctx.original_route, APIRoute) and ctx.path_format
        for method in ctx.methods or ()
    }


def _error_components() -> dict[str, Any]:
    _, top = models_json_schema(
        [(ErrorResponse, "serialization"), (ValidationErrorResponse, "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    components: dict[str, Any] = top["$defs"]
    return components


def _ref(status: int) -> dict[str, str]:
    name = ValidationErrorResponse if status == 422 else ErrorResponse
    return {"$ref": f"#/components/schemas/{name.__name__}"}


def document_errors(schema: dict[str, Any], app: FastAPI) -> None:
    """Adds each operation's error answers to `schema` (in place), and takes the security
    requirement off operations that need no token."""
    auth_on = bool(app.state.auth_required)
    routes = api_routes(app)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            route = routes.get((path, method))
            if route is None:
                continue
            if not (auth_on and is_protected(path)):
                operation.pop("security", None)
            responses = operation.setdefault("responses", {})
            for status in error_statuses(path, method.upper(), route, auth_on):
                answer = responses.setdefault(str(status), {})
                if status == 422 or "description" not in answer:  # FastAPI's: "Validation Error"
                    answer["description"] = ERROR_DESCRIPTIONS[status]
                answer["content"] = {"application/json": {"schema": _ref(status)}}
                if status in ERROR_HEADERS:
                    answer["headers"] = ERROR_HEADERS[status]
            operation["responses"] = dict(sorted(responses.items()))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(_error_components())
    # FastAPI's own 422 schemas, replaced above, unless a route still refers to them.
    text = repr(schema["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}'" not in text:
            components.pop(name, None)


def install(app: FastAPI) -> None:
    """Makes `app.openapi()` return the document with the error answers (built once)."""
    build = app.openapi  # FastAPI's: cached, rebuilt when routes are added
    documented: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = build()
        if not documented or documented[0] is not schema:
            document_errors(schema, app)
            documented[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
