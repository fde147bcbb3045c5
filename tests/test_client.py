"""The public Python client (`service.client`) and the `hpo` commands built on it, against a
real app under a real uvicorn server (auth required; SQLite and PostgreSQL): every client
method, every error class, the CLI's JSON outputs parsed, `--version`, the global options
and their environment variables.

The end-to-end part (a real `hpo serve` with workers: `examples/client.py`, the per-epoch
log lines, the access log) is in tests/test_client_e2e.py."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from service import __version__
from service.access.tokens import create_token
from service.app.main import create_app
from service.client import (
    ApiError,
    AuthError,
    Client,
    ConflictError,
    ConnectionError,
    NotFoundError,
    RateLimitedError,
    SpecFileError,
    TooLargeError,
    ValidationError,
    WaitTimeoutError,
)
from service.core.db.engine import session_scope
from service.core.db.models import TrialRecord
from service.core.settings import Settings
from service.studies.service import create_study
from service.studies.spec import StudySpec
from service.worker.process import WorkerProcess
from tests.conftest import backends, free_port, migrated_database, tiny_spec, unique
from tests.dataset_files import csv_bytes, small_xy
from tests.test_e2e import hpo_command

MAX_BYTES = 16 * 1024  # the server's request cap: an upload past it is a 413
BURST = 10  # submissions a token may make back to back (then 1 a minute)


@dataclass
class Secured:
    url: str
    admin: str
    submitter: str
    reader: str
    flood: str  # only the rate-limit test submits with it
    study: str  # a completed study of 3 trials, by name
    study_id: int
    trial_ids: list[int]
    files: Path


@pytest.fixture(scope="module", params=backends())
def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    """The real app with auth required, a request cap of MAX_BYTES and a submission burst
    of BURST per token, on a private migrated database holding one finished study."""
    for url in migrated_database(request.param, tmp_path_factory):
        with session_scope(url) as session:
            tokens = [create_token(session, f"c-{role}", role)[1] for role in ROLES]
            flood = create_token(session, "c-flood", "submit")[1]
        settings = Settings(
            database_url=url,
            auth="required",
            max_request_bytes=MAX_BYTES,
            submit_burst=BURST,
            submit_per_minute=1,
            torch_threads=1,
        )
        with session_scope(url) as session:
            spec = StudySpec.model_validate(tiny_spec("client-done", n_trials=3))
            study_id = create_study(session, spec).id
        WorkerProcess(settings).run(until_idle=True, install_signals=False)
        with session_scope(url) as session:
            trial_ids = list(
                session.scalars(
                    select(TrialRecord.id)
                    .where(TrialRecord.study_id == study_id)
                    .order_by(TrialRecord.id)
                )
            )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        files = tmp_path_factory.mktemp("client-files")
        try:
            yield Secured(
                f"http://127.0.0.1:{port}",
                *tokens,
                flood,
                "client-done",
                study_id,
                trial_ids,
                files,
            )
        finally:
            server.should_exit = True
            thread.join(timeout=10)


ROLES = ("admin", "submit", "read")


def client(s: Secured, token: str | None = None) -> Client:
    return Client(s.url, s.admin if token is None else token)


# ---- reading ---------------------------------------------------------------------------------


def test_reading_a_finished_study(secured: Secured) -> None:
    with client(secured, secured.reader) as c:
        assert c.health()["status"] == "ok"
        by_name = c.get(secured.study)
        assert by_name == c.get(secured.study_id) == c.get(str(secured.study_id))
        assert by_name["status"] == "completed" and by_name["n_trials"] == 3
        assert secured.study_id in [s["id"] for s in c.studies()]
        assert secured.study_id in [s["id"] for s in c.list_studies(limit=1000)]

        best = c.best(secured.study)
        trials = list(c.trials(secured.study))
        assert [t["number"] for t in trials] == [0, 1, 2]
        assert best["value"] == max(t["value"] for t in trials if t["value"] is not None)
        assert c.trials_page(secured.study_id, limit=2)["total"] == 3

        trial = c.trial(best["trial_id"])
        assert trial["trial_id"] == best["trial_id"] and trial["has_model"]
        assert c.diagnosis(best["trial_id"])["trial_id"] == best["trial_id"]
        assert c.report(secured.study)["study_id"] == secured.study_id
        assert isinstance(c.workers(), list) and c.workers("running") == []

        model = c.model(best["trial_id"])
        assert model[:2] == b"PK"  # a torch.save zip
        saved = c.download_model(best["trial_id"], secured.files / "best.pt")
        assert saved.read_bytes() == model


def test_trials_are_fetched_a_page_at_a_time_as_the_iteration_goes(secured: Secured) -> None:
    with client(secured) as c:
        pages: list[int] = []
        fetch = c.trials_page

        def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
            page = fetch(*args, **kwargs)
            pages.append(len(page["items"]))
            return page

        c.trials_page = counting  # type: ignore[method-assign]
        it = c.trials(secured.study_id, page_size=1)
        assert pages == []  # nothing before the first next()
        first = list(itertools.islice(it, 2))
        assert pages == [1, 1] and [t["number"] for t in first] == [0, 1]
        assert [t["number"] for t in it] == [2] and pages == [1, 1, 1]
        assert [t["state"] for t in c.trials(secured.study_id, state="complete")] == [
            t["state"] for t in c.trials(secured.study_id) if t["state"] == "complete"
        ]


def test_wait_returns_the_final_study_and_reports_progress(secured: Secured) -> None:
    seen: list[str] = []
    with client(secured, secured.reader) as c:
        final = c.wait(secured.study, timeout=30, progress=lambda s: seen.append(s["status"]))
    assert final["status"] == "completed" and seen == ["completed"]


def test_wait_gives_up_after_its_timeout(secured: Secured) -> None:
    """No worker runs here: a new study never ends."""
    with client(secured, secured.submitter) as c:
        created = c.submit(tiny_spec(unique("client-wait")))
        calls: list[int] = []
        with pytest.raises(WaitTimeoutError) as e:
            c.wait(created["id"], timeout=0.3, interval=0.1, progress=lambda s: calls.append(1))
        assert e.value.study["status"] == "running" and len(calls) >= 2
        assert c.stop(created["id"])["status"] == "stopped"


# ---- writing ---------------------------------------------------------------------------------


def test_submit_takes_a_dict_a_model_or_a_file(secured: Secured, tmp_path: Path) -> None:
    yaml_file = tmp_path / "spec.yaml"
    yaml_file.write_text(
        "name: from-yaml\ndataset: {name: moons}\nbudget: {n_trials: 1}\n"
        "space: {lr: {type: float, low: 0.001, high: 0.1}}\n"
    )
    with client(secured, secured.submitter) as c:
        as_model = StudySpec.model_validate(tiny_spec(unique("client-model")))
        name = unique("client-yaml")
        made = [
            c.submit(as_model),
            c.submit(yaml_file, name=name),
        ]
        assert made[1]["name"] == name
        for created in made:
            assert c.get(created["id"])["status"] == "running"
            assert c.stop(created["id"])["status"] == "stopped"
    json_file = tmp_path / "spec.json"
    json_file.write_text(json.dumps(tiny_spec(unique("client-json"))))
    with client(secured) as c:  # the admin: submitter's burst is used up by the rate test
        created = c.submit(str(json_file))
        assert c.get(created["name"])["id"] == created["id"]
        c.stop(created["id"])


def test_datasets(secured: Secured) -> None:
    x, y = small_xy()
    path = secured.files / "set.csv"
    path.write_bytes(csv_bytes(x, y))
    name = unique("client-set")
    with client(secured) as c:
        info = c.upload_dataset(name, path, target="label")
        assert info["n_rows"] == len(y) and info["n_classes"] == 3
        assert c.dataset(name) == info
        assert name in [d["name"] for d in c.datasets()]
        c.delete_dataset(name)
        with pytest.raises(NotFoundError):
            c.dataset(name)


def test_learning_curve(secured: Secured) -> None:
    with client(secured) as c:
        with pytest.raises(NotFoundError):
            c.learning_curve(secured.study)
        job = c.queue_learning_curve(secured.study, [0.5, 1.0])
        assert job["state"] == "queued" and job["fractions"] == [0.5, 1.0]
        assert c.learning_curve(secured.study)["id"] == job["id"]


def test_tokens_for_admins(secured: Secured) -> None:
    with client(secured) as c:
        made = c.create_token(unique("client-tok"), "read")
        assert made["token"].startswith("hpo_") and made["revoked_at"] is None
        listed = {t["id"]: t for t in c.tokens()}
        assert "token" not in listed[made["id"]]
        with Client(secured.url, made["token"]) as new:
            assert new.get(secured.study_id)["id"] == secured.study_id
            revoked = c.revoke_token(made["id"])
            assert [t["id"] for t in revoked] == [made["id"]]
            with pytest.raises(AuthError) as e:
                new.get(secured.study_id)
            assert e.value.status == 401
        with pytest.raises(NotFoundError):
            c.revoke_token(made["id"])
    with client(secured, secured.submitter) as c, pytest.raises(AuthError) as e:
        c.tokens()
    assert e.value.status == 403 and "needs admin" in e.value.message


# ---- each error class ------------------------------------------------------------------------


def test_each_error_class(secured: Secured) -> None:
    with Client("http://127.0.0.1:1") as c, pytest.raises(ConnectionError) as unreachable:
        c.health()
    assert unreachable.value.status is None and "cannot reach" in str(unreachable.value)
    with pytest.raises(ConnectionError):
        Client("http://[::1")

    with Client(secured.url) as anonymous, pytest.raises(AuthError) as e:
        anonymous.list_studies()
    assert e.value.status == 401 and str(e.value).startswith("401: authentication required")

    with client(secured, secured.reader) as reader:
        with pytest.raises(AuthError) as e:
            reader.submit(tiny_spec(unique("client-r")))
        assert e.value.status == 403 and e.value.detail == (
            "token 'c-read' has role read; needs submit"
        )
        with pytest.raises(NotFoundError) as missing:
            reader.get(424242)
        assert missing.value.status == 404 and "424242" in str(missing.value)
        with pytest.raises(NotFoundError, match="no study named 'no-such-study'"):
            reader.get("no-such-study")

    with client(secured) as c:
        bad = tiny_spec(unique("client-bad"), colour="red")
        bad["budget"] = {"n_trials": 0}
        with pytest.raises(ValidationError) as invalid:
            c.submit(bad)
        assert invalid.value.status == 422
        assert set(invalid.value.fields) == {"colour", "budget.n_trials"}, invalid.value.fields
        assert "greater than or equal to 1" in invalid.value.fields["budget.n_trials"]

        with pytest.raises(ConflictError) as taken:
            c.submit(tiny_spec(secured.study))
        assert taken.value.status == 409

        with pytest.raises(TooLargeError) as large:
            c.upload_dataset(unique("big"), b"0" * (2 * MAX_BYTES), "big.csv")
        assert large.value.status == 413

        with pytest.raises(SpecFileError, match="cannot read"):
            c.submit(secured.files / "missing.yaml")

    # the base class carries every one of them
    assert all(
        issubclass(cls, ApiError)
        for cls in (ConnectionError, AuthError, NotFoundError, ValidationError, TooLargeError)
    )


def test_rate_limited(secured: Secured) -> None:
    with client(secured, secured.flood) as c:
        for _ in range(BURST):
            c.stop(c.submit(tiny_spec(unique("client-flood")))["id"])
        with pytest.raises(RateLimitedError) as e:
            c.submit(tiny_spec(unique("client-flood")))
    assert e.value.status == 429 and e.value.retry_after is not None
    assert e.value.retry_after > 0


# ---- the CLI on top of it --------------------------------------------------------------------


def hpo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    return subprocess.run(
        [*hpo_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def hpo_json(s: Secured, *args: str) -> Any:
    """Run `hpo ARGS -o json` with the service given in the environment; its parsed stdout."""
    out = hpo(*args, "-o", "json", env={"HPO_URL": s.url, "HPO_TOKEN": s.admin})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_version() -> None:
    out = hpo("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"hpo {__version__}"


def test_global_options_before_or_after_the_command_and_from_the_environment(
    secured: Secured,
) -> None:
    opts = ["--url", secured.url, "--token", secured.admin]
    before = hpo(*opts, "status", secured.study, "-o", "json")
    after = hpo("status", secured.study, "-o", "json", *opts)
    env = hpo(
        "status",
        secured.study,
        "-o",
        "json",
        env={"HPO_URL": secured.url, "HPO_TOKEN": secured.admin},
    )
    assert before.returncode == after.returncode == env.returncode == 0, before.stderr
    assert json.loads(before.stdout)["id"] == secured.study_id
    assert before.stdout == after.stdout == env.stdout
    # an option given wins over the environment
    wrong = {"HPO_URL": "http://127.0.0.1:1", "HPO_TOKEN": "hpo_" + "x" * 43}
    assert hpo("status", secured.study, *opts, env=wrong).returncode == 0
    assert hpo(*opts, "status", secured.study, env=wrong).returncode == 0


def test_every_printing_command_gives_the_apis_json(secured: Secured, tmp_path: Path) -> None:
    """`-o json` prints the API's answer: parsed here and compared with the client's."""
    s = secured
    with client(s) as c:
        best = c.best(s.study)
        study = c.get(s.study)
        trial = c.trial(best["trial_id"])
        report = c.report(s.study)
    assert hpo_json(s, "status", s.study) == study
    assert hpo_json(s, "watch", s.study) == study
    assert hpo_json(s, "best", s.study) == best
    assert s.study_id in [x["id"] for x in hpo_json(s, "studies")]
    page = hpo_json(s, "trials", s.study, "--limit", "2")
    assert page["total"] == 3 and [t["number"] for t in page["items"]] == [0, 1]
    assert (
        hpo_json(s, "trials", s.study, "--all")["items"] == hpo_json(s, "trials", s.study)["items"]
    )
    assert hpo_json(s, "trial", str(best["trial_id"])) == trial
    diagnosis = hpo_json(s, "trial", str(best["trial_id"]), "--diagnosis")
    assert diagnosis["trial_id"] == best["trial_id"] and "findings" in diagnosis
    assert hpo_json(s, "report", s.study) == report
    assert isinstance(hpo_json(s, "workers"), list)

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec(unique("cli-json"))))
    created = hpo_json(s, "submit", str(spec))
    assert set(created) == {"id", "name", "status", "warnings"}
    assert hpo_json(s, "stop", str(created["id"]))["status"] == "stopped"

    x, y = small_xy()
    (tmp_path / "d.csv").write_bytes(csv_bytes(x, y))
    name = unique("cli-set")
    uploaded = hpo_json(
        s, "dataset", "upload", str(tmp_path / "d.csv"), "--name", name, "--target", "label"
    )
    assert uploaded["name"] == name and uploaded["n_rows"] == len(y)
    assert hpo_json(s, "dataset", "show", name) == uploaded
    assert uploaded in hpo_json(s, "dataset", "list")
    with client(s) as c:
        try:
            queued = c.learning_curve(s.study)
        except NotFoundError:
            queued = c.queue_learning_curve(s.study)
    assert hpo_json(s, "learning-curve", s.study, "--status") == queued


def test_tables_by_default(secured: Secured) -> None:
    opts = ["--url", secured.url, "--token", secured.admin]
    out = hpo("trials", secured.study, *opts)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["#", "id", "state", "value"]
    assert lines[-1] == "(3 of 3)"
    out = hpo("studies", *opts)
    assert "client-done" in out.stdout and out.stdout.split()[:3] == ["id", "name", "status"]
    out = hpo("best", secured.study, *opts)
    assert out.returncode == 0 and "params.lr" in out.stdout


def test_token_commands_print_json_too(secured: Secured, tmp_path: Path) -> None:
    db = tmp_path / "hpo.db"
    assert hpo("db", "upgrade", "--database-url", f"sqlite:///{db}").returncode == 0
    made = hpo(
        "token",
        "create",
        "--name",
        "j",
        "--role",
        "read",
        "-o",
        "json",
        "--database-url",
        f"sqlite:///{db}",
    )
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert token["name"] == "j" and token["token"].startswith("hpo_")
    listed = hpo("token", "list", "-o", "json", "--database-url", f"sqlite:///{db}")
    assert [t["id"] for t in json.loads(listed.stdout)] == [token["id"]]
    assert "token" not in json.loads(listed.stdout)[0]


FRONT = {
    "trials": [
        {"trial_id": 7, "number": 2, "values": [0.91, 1200.0], "params": {"lr": 0.01}},
        {"trial_id": 9, "number": 4, "values": [0.88, 800.0], "params": {"lr": 0.03}},
    ],
    "objectives": [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "n_parameters", "direction": "minimize"},
    ],
}


class MultiObjective(http.server.BaseHTTPRequestHandler):
    """A stand-in for a service with multi-objective studies (issue 15, not on this branch):
    `/best` answers 409 pointing at `/pareto`, which answers the front."""

    def do_GET(self) -> None:
        if self.path.endswith("/best"):
            status, body = 409, {"detail": "study 5 has 2 objectives: see /pareto"}
        elif self.path.endswith("/pareto"):
            status, body = 200, FRONT
        else:
            status, body = 404, {"detail": "not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        pass


def test_best_of_a_multi_objective_study_prints_the_front() -> None:
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MultiObjective)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{stub.server_address[1]}"
    try:
        with Client(url) as c:
            with pytest.raises(ConflictError):
                c.best(5)
            assert c.pareto(5) == FRONT
        as_json = hpo("best", "5", "--url", url, "-o", "json")
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout) == FRONT
        table = hpo("best", "5", "--url", url)
        assert table.returncode == 0, table.stderr
        assert "val_accuracy (maximize)" in table.stdout and "1200.0000" in table.stdout
    finally:
        stub.shutdown()
        stub.server_close()
