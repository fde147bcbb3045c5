"""One error hierarchy for the whole service; each error knows its HTTP status.

Domain code raises these; `service.app.main` maps every `ServiceError` to a JSON answer
``{"detail": str(error)}`` with the error's `status_code` in one exception handler, so routes
never translate errors by hand. An error that names a request field sets `field` (a dotted
path such as ``"budget.n_trials"``) and is answered as a 422 in FastAPI's validation shape.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every expected failure; `status_code` is the HTTP status it maps to."""

    status_code = 500


class NotFound(ServiceError):
    """The resource does not exist (404)."""

    status_code = 404


class Conflict(ServiceError):
    """The request conflicts with the resource's current state (409)."""

    status_code = 409


class InvalidInput(ServiceError):
    """The request is well-formed but its content is refused (422).

    `field`: the dotted path of the offending field in the request body, if one is to blame.
    """

    status_code = 422

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Forbidden(ServiceError):
    """The caller is authenticated but may not do this (403)."""

    status_code = 403


class Unauthorized(ServiceError):
    """No valid credentials (401)."""

    status_code = 401


class TooLarge(ServiceError):
    """The request body is over a limit (413)."""

    status_code = 413


class TooManyRequests(ServiceError):
    """A rate or quota limit was hit (429)."""

    status_code = 429


class Unavailable(ServiceError):
    """A dependency (the database) is unavailable (503)."""

    status_code = 503
