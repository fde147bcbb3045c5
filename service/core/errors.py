"""One error hierarchy for the whole service; each error knows its HTTP status.

Domain code raises these; `service.app.main` maps every `ServiceError` to a JSON answer
``{"detail": str(error)}`` with the error's `status_code` in one exception handler, so routes
never translate errors by hand. An error that names a request field sets `field` (a dotted
path such as ``"budget.n_trials"``) and is answered as a 422 in FastAPI's validation shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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

    `field`: the dotted path of the offending field in the request body (``"dataset.name"``),
    if one is to blame; the answer then has FastAPI's validation shape, one entry per problem,
    ``{"type": kind, "loc": ["body", ...field], "msg": reason, "input": value}``. `also`: more
    problems of the same request, answered in the same list after this one.
    """

    status_code = 422

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        kind: str = "value_error",
        value: Any = None,
        also: Sequence[InvalidInput] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.kind = kind
        self.value = value
        self.also = list(also)

    def validation_errors(self) -> list[dict[str, Any]]:
        """This problem and `also` as FastAPI's validation error entries (fielded ones only)."""
        return [
            {
                "type": e.kind,
                "loc": ["body", *e.field.split(".")],
                "msg": e.reason,
                "input": e.value,
            }
            for e in (self, *self.also)
            if e.field is not None
        ]


class Forbidden(ServiceError):
    """The caller is authenticated but may not do this (403)."""

    status_code = 403


class Unauthorized(ServiceError):
    """No valid credentials (401); answered with ``WWW-Authenticate: Bearer``."""

    status_code = 401


class TooManyRequests(ServiceError):
    """A rate or quota limit was hit (429)."""

    status_code = 429


# -- the domain's errors ------------------------------------------------------------------


class TokenError(Unauthorized):
    """An API token is refused (malformed, unknown, revoked), or cannot be made or revoked as
    asked; the message says why."""


class DatasetFileError(InvalidInput, ValueError):
    """An uploaded dataset file cannot be used; `field` is the form field to blame (file or
    target), `reason` why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason, field=field)

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class StudyNotFound(NotFound):
    def __init__(self, study_id: int) -> None:
        super().__init__(f"study {study_id} not found")


class StudyExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"a study named {name!r} already exists")


class TrialNotFound(NotFound):
    def __init__(self, trial_id: int) -> None:
        super().__init__(f"trial {trial_id} not found")


class ModelNotAvailable(NotFound):
    """No model to serve for a trial; the message says why."""


class DatasetNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"dataset {name!r} not found")


class DatasetExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"a dataset named {name!r} already exists")


class DatasetInUse(Conflict):
    def __init__(self, name: str, studies: list[str]) -> None:
        super().__init__(f"dataset {name!r} is used by running studies {studies}; stop them first")


class NoCompletedTrial(Conflict):
    def __init__(self, study_id: int) -> None:
        super().__init__(f"study {study_id} has no completed trial yet: nothing to train")


class JobActive(Conflict):
    def __init__(self, study_id: int, job_id: int) -> None:
        super().__init__(
            f"a learning curve of study {study_id} is already queued or running (job {job_id})"
        )


class NoLearningCurve(NotFound):
    def __init__(self, study_id: int) -> None:
        super().__init__(f"study {study_id} has no learning curve; POST one first")
