"""The client's errors: one `ApiError` base, one subclass per kind of refusal.

Every failure of a `Client` call is an `ApiError`: the service unreachable
(`ConnectionError`), or an answer of status 400 or more (`from_response` picks the class by
status). `str(error)` is one line, `"<status>: <the server's detail>"`, a 422's field
problems as `invalid request: field.path: message; ...`.
"""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """A call failed. `status`: the HTTP status (None when no answer came); `detail`: the
    body's `detail` as the service sent it (a string, or a 422's list of problems);
    `fields`: for a 422, each problem's dotted field path (`"budget.n_trials"`) -> its
    message (empty otherwise)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: Any = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail if detail is not None else message
        self.fields: dict[str, str] = fields or {}


class ConnectionError(ApiError):
    """The service could not be reached (refused, timed out, a bad URL); `status` is None."""


class AuthError(ApiError):
    """401 (no token, or an unknown or revoked one) or 403 (the token's role or ownership
    does not allow the call)."""


class NotFoundError(ApiError):
    """404: no such study, trial, dataset or model (or no study of that name)."""


class ConflictError(ApiError):
    """409: the name is taken, a running study uses the dataset, no trial has finished yet,
    a multi-objective study asked for its single best (see `Client.pareto`), ..."""


class ValidationError(ApiError):
    """422: the request was refused field by field; `fields` maps each field to its problem."""


class TooLargeError(ApiError):
    """413: the request body is larger than the service accepts (HPO_MAX_REQUEST_BYTES)."""


class RateLimitedError(ApiError):
    """429: too many submissions; `retry_after` is the seconds the service asks to wait
    (None when it did not say)."""

    retry_after: float | None = None


class ServerError(ApiError):
    """5xx: the service (or a proxy in front of it) failed."""


BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    422: ValidationError,
    429: RateLimitedError,
}


def field_path(loc: list[Any]) -> str:
    """A 422 problem's location as a dotted path without its `body`/`query`/`path` root:
    `["body", "space", "lr", "low"]` -> `"space.lr.low"`; list indexes stay numbers."""
    parts = [str(p) for p in loc]
    if parts[:1] in (["body"], ["query"], ["path"], ["form"]):
        parts = parts[1:]
    return ".".join(parts)


def from_response(response: httpx.Response) -> ApiError:
    """The error of an answer with status >= 400: its class by status, its message one line
    (`"<status>: <detail>"`). A body that is not the API's JSON (a proxy's error page) is
    summarized by its status, never printed."""
    status = response.status_code
    try:
        detail = response.json().get("detail", response.reason_phrase)
    except (ValueError, AttributeError):  # not JSON, or JSON but not an object
        detail = f"{response.reason_phrase} (not an answer of the hpo API)"
    fields: dict[str, str] = {}
    text = detail
    if isinstance(detail, list):  # validation problems: each names its field
        parts = []
        for problem in detail:
            if not isinstance(problem, dict):
                parts.append(str(problem))
                continue
            path = field_path(list(problem.get("loc") or []))
            msg = str(problem.get("msg"))
            fields[path] = f"{fields[path]}; {msg}" if path in fields else msg
            parts.append(f"{path}: {msg}" if path else msg)
        text = "invalid request: " + "; ".join(parts)
    cls = BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    error = cls(" ".join(f"{status}: {text}".split()), status=status, detail=detail, fields=fields)
    if isinstance(error, RateLimitedError):
        try:
            error.retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            error.retry_after = None
    return error
