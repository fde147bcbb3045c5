"""One error hierarchy for the whole service; each error knows its HTTP status.

Domain code raises these; `service.app.main` maps every `ServiceError` to a JSON answer
``{"detail": str(error)}`` with the error's `status_code` in one exception handler, so routes
never translate errors by hand. An error that names a request field sets `field` (a dotted
path such as ``"budget.n_trials"``) and is answered as a 422 in FastAPI's validation shape.
Error bodies echo what the client sent; `json_safe` makes any such echo serializable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel
from pydantic_core import PydanticCustomError, ValidationError

MAX_ECHO_DEPTH = 16  # deeper parts of an echoed input are elided
MAX_ECHO_CHARS = 1000  # longer echoed strings are cut


def json_safe(value: Any, _depth: int = 0) -> Any:
    """`value` as plain JSON data that strict JSON in UTF-8 can always encode, for error
    bodies that echo a client's input: non-finite floats become the strings ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``; strings with lone surrogates get them escaped
    (``"a\\ud800b"``), long strings are cut; models become dicts, exceptions their message,
    other objects their ``str``; nesting deeper than `MAX_ECHO_DEPTH` becomes ``"..."``.
    Integers of any size stay integers."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        text = value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + "..."
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    if _depth >= MAX_ECHO_DEPTH:
        return "..."
    if isinstance(value, BaseModel):  # echoed as the input of an after-validator
        value = value.model_dump()
    if isinstance(value, Mapping):
        return {json_safe(str(k)): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, _depth + 1) for v in value]
    return json_safe(str(value))


class FieldProblem(NamedTuple):
    """One refusal by a validator that looks at several fields: `loc` is the path, relative to
    the model validated, of the field to blame (``("space", "lr", "step")``,
    ``("enqueue", 0, "lr")``), `msg` why, `input` the value refused."""

    loc: tuple[str | int, ...]
    msg: str
    input: Any = None


def located(title: str, problems: Sequence[FieldProblem]) -> ValidationError:
    """pydantic's `ValidationError` with one ``value_error`` per problem at its own `loc`.

    Raised from a model validator, pydantic puts the model's location in front of each loc
    (so a 422 points at ``["body", "space", "lr", "step"]``, not at ``["body"]``), and the
    message is the problem's own (no "Value error, " prefix). `title`: the model's name."""
    return ValidationError.from_exception_data(
        title,
        [
            {"type": PydanticCustomError("value_error", p.msg), "loc": p.loc, "input": p.input}
            for p in problems
        ],
    )


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
        """This problem and `also` as FastAPI's validation error entries (fielded ones only),
        made `json_safe`."""
        return [
            json_safe(
                {
                    "type": e.kind,
                    "loc": ["body", *e.field.split(".")],
                    "msg": e.reason,
                    "input": e.value,
                }
            )
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
