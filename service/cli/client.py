"""The REST client the `hpo` commands use: one class over httpx, one error.

It knows the service's routes and nothing of argparse, so that it can grow into the public
Python client (`Client(url).submit(spec).wait().best()`). Responses are returned as parsed
JSON (`Json`, the API's response schemas as dicts); every failure, unreachable service or
4xx/5xx answer alike, is one `ApiError` whose message is what the command prints.
"""

from __future__ import annotations

import hashlib
from types import TracebackType
from typing import Any, cast

import httpx

from service.core.states import WorkerState

Json = dict[str, Any]


class ApiError(Exception):
    """The service could not be reached or answered 4xx/5xx. The message is one line:
    `"<status>: <the server's detail>"` (validation errors as `field: message`, joined
    by `; `), or `"cannot reach the service at <url>: <reason>"`."""


AUTH_HINT = "give a token with --token or HPO_TOKEN"


def error_message(response: httpx.Response) -> str:
    """`"<status>: <detail>"` for an error response, on one line; a 422's detail list
    becomes `invalid request: field.path: message; ...`. A body that is not the API's
    JSON (a proxy's error page) is summarized by its status, never printed."""
    try:
        detail = response.json().get("detail", response.reason_phrase)
    except (ValueError, AttributeError):  # not JSON, or JSON but not an object
        detail = f"{response.reason_phrase} (not an answer of the hpo API)"
    if isinstance(detail, list):  # validation errors: each names its field
        detail = "invalid request: " + "; ".join(_validation_error(d) for d in detail)
    message = f"{response.status_code}: {detail}"
    if response.status_code == 401:
        message += f" ({AUTH_HINT})"
    return " ".join(str(message).split())


def _validation_error(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    loc = [str(p) for p in error.get("loc", [])]
    field = ".".join(loc[1:] if loc[:1] in (["body"], ["query"], ["path"]) else loc)
    return f"{field}: {error.get('msg')}" if field else str(error.get("msg"))


class ApiClient:
    """The service's REST API at `url` (e.g. `http://127.0.0.1:8000`), with an optional
    bearer `token` and a per-request `timeout` in seconds. Use it as a context manager (or
    call `close`); every method raises `ApiError` on failure."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(base_url=url, timeout=timeout, headers=headers)
        except (httpx.InvalidURL, ValueError) as e:  # ValueError: a token httpx cannot send
            raise ApiError(f"cannot use the service URL {url!r} or token: {e}") from e

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    # ---- transport ---------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; `kwargs` go to httpx (`params`, `json`, `data`, `files`). Returns the
        response of a status below 400."""
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            reason = " ".join(str(e).split()) or e.__class__.__name__
            raise ApiError(f"cannot reach the service at {self.url}: {reason}") from e
        if response.status_code >= 400:
            raise ApiError(error_message(response))
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as e:
            raise ApiError(
                f"{response.url} answered {response.status_code} with a body that is not "
                "JSON: is --url the hpo service?"
            ) from e

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET `path`; its parsed JSON body."""
        return self._json(self.request("GET", path, params=params))

    def post(self, path: str, **kwargs: Any) -> Any:
        """POST `path` with `json=`, or `data=` and `files=` (a form); its parsed JSON body."""
        return self._json(self.request("POST", path, **kwargs))

    def delete(self, path: str) -> None:
        """DELETE `path` (the API answers 204, no body)."""
        self.request("DELETE", path)

    # ---- studies -----------------------------------------------------------------------------

    def study_id(self, ref: str) -> int:
        """The id of the study `ref` names: an id as digits, or a study's name."""
        if ref.isdigit():
            return int(ref)
        for study in self.get("/api/studies", params={"limit": 1000}):
            if study["name"] == ref:
                return int(study["id"])
        raise ApiError(f"no study named {ref!r}")

    def submit(self, spec: Json) -> Json:
        """Create a study from a spec (the API validates it); the study's progress."""
        return cast(Json, self.post("/api/studies", json=spec))

    def studies(self) -> list[Json]:
        """Every study's progress (id, name, status, counts, n_trials, best_value)."""
        return cast(list[Json], self.get("/api/studies"))

    def study(self, study_id: int) -> Json:
        """One study's progress."""
        return cast(Json, self.get(f"/api/studies/{study_id}"))

    def stop(self, study_id: int) -> Json:
        """Stop a study (no new trials); its progress."""
        return cast(Json, self.post(f"/api/studies/{study_id}/stop"))

    def best(self, study_id: int) -> Json:
        """The best trial's value, params and training config."""
        return cast(Json, self.get(f"/api/studies/{study_id}/best"))

    def trials(self, study_id: int, *, limit: int = 100, offset: int = 0) -> Json:
        """A page of a study's trials: `{"items": [...], "total": n}`."""
        return cast(
            Json,
            self.get(f"/api/studies/{study_id}/trials", params={"limit": limit, "offset": offset}),
        )

    def report(self, study_id: int) -> Json:
        """A study's diagnosis report: finding counts, importances, advice."""
        return cast(Json, self.get(f"/api/studies/{study_id}/report"))

    def learning_curve(self, study_id: int) -> Json:
        """The study's latest learning-curve job, with its points so far."""
        return cast(Json, self.get(f"/api/studies/{study_id}/learning-curve"))

    def queue_learning_curve(self, study_id: int, fractions: list[float] | None = None) -> Json:
        """Queue a learning curve of the best configuration over `fractions` of the training
        data (the service's default when None); the queued job."""
        body = {"fractions": fractions} if fractions else {}
        return cast(Json, self.post(f"/api/studies/{study_id}/learning-curve", json=body))

    # ---- trials and workers ------------------------------------------------------------------

    def trial(self, trial_id: int) -> Json:
        """One trial with its curves and diagnosis."""
        return cast(Json, self.get(f"/api/trials/{trial_id}"))

    def trial_diagnosis(self, trial_id: int) -> Json:
        """One trial's findings: `{"trial_id": id, "findings": [...]}`."""
        return cast(Json, self.get(f"/api/trials/{trial_id}/diagnosis"))

    def model(self, trial_id: int) -> bytes:
        """A trial's trained model (a `torch.save` file), checked against the SHA-256 the
        service sends; `ApiError` when they differ."""
        response = self.request("GET", f"/api/trials/{trial_id}/model")
        digest = hashlib.sha256(response.content).hexdigest()
        expected = response.headers.get("x-content-sha256")
        if expected and expected != digest:
            raise ApiError(f"download corrupted: sha256 {digest}, the service said {expected}")
        return response.content

    def workers(self, status: WorkerState | None = None) -> list[Json]:
        """The worker registry, optionally only the workers in one state."""
        params = {"status": status} if status else {}
        return cast(list[Json], self.get("/api/workers", params=params))

    # ---- datasets ----------------------------------------------------------------------------

    def upload_dataset(
        self, name: str, filename: str, content: bytes, target: str | None = None
    ) -> Json:
        """Upload a dataset file (.npz, .csv, .parquet; `target` names a table's label
        column); the stored dataset's summary."""
        form = {"name": name}
        if target:
            form["target"] = target
        return cast(
            Json, self.post("/api/datasets", data=form, files={"file": (filename, content)})
        )

    def datasets(self) -> list[Json]:
        """Every uploaded dataset's summary."""
        return cast(list[Json], self.get("/api/datasets"))

    def dataset(self, name: str) -> Json:
        """One dataset's summary."""
        return cast(Json, self.get(f"/api/datasets/{name}"))

    def delete_dataset(self, name: str) -> None:
        """Delete a dataset (409 while a running study uses it)."""
        self.delete(f"/api/datasets/{name}")
