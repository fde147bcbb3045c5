"""`Client`: the service's REST API from Python (notebooks, scripts, the `hpo` commands).

    from service.client import Client
    with Client("http://127.0.0.1:8000") as hpo:
        study = hpo.submit("examples/digits.yaml")
        final = hpo.wait(study["id"], progress=lambda s: print(s["counts"]))
        print(hpo.best(study["id"])["params"])

Answers are the API's JSON bodies as dicts (`Json`; their keys are the response schemas of
`/docs`). Studies may be named by id or by name. Every failure raises an
`service.client.errors.ApiError` subclass.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast

import httpx

from service.client.errors import ApiError, ConnectionError, NotFoundError, from_response
from service.client.specs import load_spec_file

Json = dict[str, Any]
StudyRef = int | str  # an id, or a study's name
FINAL_STATES = ("completed", "stopped", "failed")
MAX_PAGE = 1000  # the API's largest page


class SpecModel(Protocol):
    """A pydantic model of a spec (e.g. `service.studies.spec.StudySpec`)."""

    def model_dump(self, *, mode: str, exclude_unset: bool) -> dict[str, Any]: ...


class WaitTimeoutError(TimeoutError):
    """`Client.wait` gave up: the study had not ended after `timeout` seconds. `study` is
    its last state."""

    def __init__(self, message: str, study: Json) -> None:
        super().__init__(message)
        self.study = study


class Client:
    """The REST API at `url` (e.g. `http://127.0.0.1:8000`), with an optional bearer `token`
    and a per-request `timeout` in seconds. A context manager (or call `close`).

    Raises `ConnectionError` (an `ApiError`) when the URL or token cannot be used."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(base_url=url, timeout=timeout, headers=headers)
        except (httpx.InvalidURL, ValueError) as e:  # ValueError: a token httpx cannot send
            raise ConnectionError(f"cannot use the service URL {url!r} or token: {e}") from e

    def __enter__(self) -> Client:
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
        """One request; `kwargs` go to httpx (`params`, `json`, `data`, `files`). The response
        when its status is below 400; else the `ApiError` subclass of its status."""
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            reason = " ".join(str(e).split()) or e.__class__.__name__
            raise ConnectionError(f"cannot reach the service at {self.url}: {reason}") from e
        if response.status_code >= 400:
            raise from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as e:
            raise ApiError(
                f"{response.url} answered {response.status_code} with a body that is not "
                f"JSON: is {self.url} the hpo service?",
                status=response.status_code,
            ) from e

    def health(self) -> Json:
        """`{"status", "database", "version"}` (needs no token)."""
        return cast(Json, self._json("GET", "/api/health"))

    # ---- studies -----------------------------------------------------------------------------

    def study_id(self, study: StudyRef) -> int:
        """The id of `study`: an int, digits, or a study's name (looked up; `NotFoundError`
        when no study has it)."""
        if isinstance(study, int):
            return study
        if study.isdigit():
            return int(study)
        offset = 0
        while True:
            page = self.list_studies(limit=MAX_PAGE, offset=offset)
            for s in page:
                if s["name"] == study:
                    return int(s["id"])
            if len(page) < MAX_PAGE:
                raise NotFoundError(f"no study named {study!r}", status=404)
            offset += MAX_PAGE

    def submit(
        self, spec: Mapping[str, Any] | SpecModel | str | os.PathLike[str], name: str | None = None
    ) -> Json:
        """Create a study from a spec: a dict, a pydantic model (`StudySpec`), or the path of a
        YAML or JSON file (`SpecFileError` when it cannot be used); `name` overrides the
        spec's. Returns `{"id", "name", "status", "warnings"}` (warnings: accepted, but
        probably not meant). `ValidationError` names each bad field; `ConflictError` when
        the name is taken; `RateLimitedError` past the submission rate."""
        if isinstance(spec, str | os.PathLike):
            body: dict[str, Any] = load_spec_file(Path(spec))
        elif isinstance(spec, Mapping):
            body = dict(spec)
        else:
            body = spec.model_dump(mode="json", exclude_unset=True)
        if name is not None:
            body["name"] = name
        return cast(Json, self._json("POST", "/api/studies", json=body))

    def list_studies(self, limit: int = 100, offset: int = 0) -> list[Json]:
        """A page of studies' progress (newest first): id, name, status, n_trials, counts by
        trial state, best_value, direction, error, created_at, finished_at."""
        params = {"limit": limit, "offset": offset}
        return cast(list[Json], self._json("GET", "/api/studies", params=params))

    def studies(self) -> Iterator[Json]:
        """Every study's progress, fetched a page at a time as the iteration goes."""
        offset = 0
        while True:
            page = self.list_studies(limit=MAX_PAGE, offset=offset)
            yield from page
            if len(page) < MAX_PAGE:
                return
            offset += MAX_PAGE

    def get(self, study: StudyRef) -> Json:
        """One study: its progress, spec, best trial and warnings."""
        return cast(Json, self._json("GET", f"/api/studies/{self.study_id(study)}"))

    def stop(self, study: StudyRef) -> Json:
        """Stop a study (no new trials; running ones finish); its progress."""
        return cast(Json, self._json("POST", f"/api/studies/{self.study_id(study)}/stop"))

    def best(self, study: StudyRef) -> Json:
        """The best trial: trial_id, number, value, params, config, test_accuracy.
        `ConflictError` when no trial has finished yet, or for a multi-objective study
        (whose answer is `pareto`)."""
        return cast(Json, self._json("GET", f"/api/studies/{self.study_id(study)}/best"))

    def pareto(self, study: StudyRef) -> Json:
        """A multi-objective study's Pareto front: `{"trials": [{"trial_id", "number",
        "values", "params"}, ...], "objectives": [{"metric", "direction"}, ...]}`."""
        return cast(Json, self._json("GET", f"/api/studies/{self.study_id(study)}/pareto"))

    def trials_page(
        self, study: StudyRef, limit: int = 100, offset: int = 0, state: str | None = None
    ) -> Json:
        """One page of a study's trials by number: `{"items": [...], "total": n}`; `state`
        (running, complete, pruned, fail, waiting) filters."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        path = f"/api/studies/{self.study_id(study)}/trials"
        return cast(Json, self._json("GET", path, params=params))

    def trials(
        self, study: StudyRef, state: str | None = None, page_size: int = 100
    ) -> Iterator[Json]:
        """Every trial of a study in number order, fetched `page_size` at a time as the
        iteration goes (nothing is fetched before the first `next`)."""
        study_id = self.study_id(study)
        offset = 0
        while True:
            page = self.trials_page(study_id, limit=page_size, offset=offset, state=state)
            items = page["items"]
            yield from items
            offset += len(items)
            if not items or offset >= page["total"]:
                return

    def wait(
        self,
        study: StudyRef,
        timeout: float | None = None,
        interval: float = 2.0,
        progress: Callable[[Json], None] | None = None,
    ) -> Json:
        """Poll every `interval` seconds until the study has ended (completed, stopped or
        failed) and no trial runs; the final study (as `get`). `progress` is called with
        each polled state. Raises `WaitTimeoutError` after `timeout` seconds (None: never)."""
        study_id = self.study_id(study)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.get(study_id)
            if progress is not None:
                progress(state)
            if state["status"] in FINAL_STATES and state["counts"]["running"] == 0:
                return state
            pause = interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(
                        f"study {study_id} is still {state['status']} after {timeout} s", state
                    )
                pause = min(pause, left)
            time.sleep(pause)

    def report(self, study: StudyRef) -> Json:
        """The study's diagnosis report: finding counts, the best trial's findings,
        importances, boundary hits, advice."""
        return cast(Json, self._json("GET", f"/api/studies/{self.study_id(study)}/report"))

    def learning_curve(self, study: StudyRef) -> Json:
        """The study's latest learning-curve job with its points so far (`NotFoundError`
        when none was queued)."""
        path = f"/api/studies/{self.study_id(study)}/learning-curve"
        return cast(Json, self._json("GET", path))

    def queue_learning_curve(self, study: StudyRef, fractions: list[float] | None = None) -> Json:
        """Queue a learning curve of the best configuration trained on `fractions` of the
        training data (the service's default, 0.1 0.25 0.5 1.0, when None); the job."""
        body = {"fractions": fractions} if fractions else {}
        path = f"/api/studies/{self.study_id(study)}/learning-curve"
        return cast(Json, self._json("POST", path, json=body))

    # ---- trials and workers ------------------------------------------------------------------

    def trial(self, trial_id: int) -> Json:
        """One trial (by its id, not its number) with its curves and diagnosis."""
        return cast(Json, self._json("GET", f"/api/trials/{trial_id}"))

    def diagnosis(self, trial_id: int) -> Json:
        """One trial's findings: `{"trial_id", "findings": [{"kind", "severity", "evidence",
        "remedies"}, ...]}`."""
        return cast(Json, self._json("GET", f"/api/trials/{trial_id}/diagnosis"))

    def model(self, trial_id: int) -> bytes:
        """A trial's trained model (a `torch.save` file), checked against the SHA-256 the
        service sends (`ApiError` when they differ); `NotFoundError` when none was kept."""
        response = self.request("GET", f"/api/trials/{trial_id}/model")
        digest = hashlib.sha256(response.content).hexdigest()
        expected = response.headers.get("x-content-sha256")
        if expected and expected != digest:
            raise ApiError(f"download corrupted: sha256 {digest}, the service said {expected}")
        return response.content

    def download_model(self, trial_id: int, path: str | os.PathLike[str]) -> Path:
        """Write a trial's model (checked as by `model`) to `path`; the path. `OSError`
        when it cannot be written."""
        out = Path(path)
        out.write_bytes(self.model(trial_id))
        return out

    def workers(self, status: str | None = None) -> list[Json]:
        """The worker registry, optionally only those `running`, `stopped` or `dead`."""
        params = {"status": status} if status else {}
        return cast(list[Json], self._json("GET", "/api/workers", params=params))

    # ---- datasets ----------------------------------------------------------------------------

    def upload_dataset(
        self,
        name: str,
        file: str | os.PathLike[str] | bytes,
        filename: str | None = None,
        target: str | None = None,
    ) -> Json:
        """Upload a dataset (.npz with X and y, .csv or .parquet with a `target` label
        column): a path, or the file's bytes with its `filename` (whose suffix names the
        format). The stored dataset's summary: name, sha256, n_rows, shape, n_classes, ...
        `ValidationError` names the problem; `TooLargeError` past the service's cap."""
        if isinstance(file, bytes):
            content, filename = file, filename or name
        else:
            content = Path(file).read_bytes()
            filename = filename or Path(file).name
        form = {"name": name}
        if target:
            form["target"] = target
        files = {"file": (filename, content)}
        return cast(Json, self._json("POST", "/api/datasets", data=form, files=files))

    def datasets(self) -> list[Json]:
        """Every uploaded dataset's summary."""
        return cast(list[Json], self._json("GET", "/api/datasets"))

    def dataset(self, name: str) -> Json:
        """One dataset's summary."""
        return cast(Json, self._json("GET", f"/api/datasets/{name}"))

    def delete_dataset(self, name: str) -> None:
        """Delete a dataset; `ConflictError` while a running study uses it."""
        self.request("DELETE", f"/api/datasets/{name}")

    # ---- tokens (admin) ----------------------------------------------------------------------

    def create_token(self, name: str, role: str) -> Json:
        """A new token (needs an admin token): `{"id", "name", "role", "created_at",
        "revoked_at", "token"}`; `token` is the secret, shown this once. `role`: metrics,
        read, submit or admin."""
        return cast(Json, self._json("POST", "/api/tokens", json={"name": name, "role": role}))

    def tokens(self) -> list[Json]:
        """Every token, revoked ones too, never their secrets (needs an admin token)."""
        return cast(list[Json], self._json("GET", "/api/tokens"))

    def revoke_token(self, ref: int | str) -> list[Json]:
        """Revoke a token by id, or every active token of a name; those revoked
        (`NotFoundError` when none is active)."""
        return cast(list[Json], self._json("POST", "/api/tokens/revoke", json={"ref": str(ref)}))
