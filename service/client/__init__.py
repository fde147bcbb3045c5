"""The public Python client of the service's REST API.

    from service.client import Client, ApiError

`Client` is synchronous (httpx); see `service/client/client.py`. Errors are
`service.client.errors` classes, all `ApiError`; spec files are read by `load_spec_file`.
This package imports nothing of the server (`service.app`, `service.worker`): it needs only
httpx, PyYAML and a URL.
"""

from service.client.client import Client, Json, StudyRef, WaitTimeoutError
from service.client.errors import (
    ApiError,
    AuthError,
    ConflictError,
    ConnectionError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TooLargeError,
    ValidationError,
)
from service.client.specs import SpecFileError, load_spec_file

__all__ = [
    "ApiError",
    "AuthError",
    "Client",
    "ConflictError",
    "ConnectionError",
    "Json",
    "NotFoundError",
    "RateLimitedError",
    "ServerError",
    "SpecFileError",
    "StudyRef",
    "TooLargeError",
    "ValidationError",
    "WaitTimeoutError",
    "load_spec_file",
]
