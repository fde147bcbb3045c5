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


# -- the domain's errors ------------------------------------------------------------------


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
