"""No Python traceback reaches a CLI user for an expected condition: each case runs the
real `hpo` program and gets one clear line on stderr and the exit code the README
documents (1 failed, 2 usage, 130 interrupted, 141 output closed).

The REST cases share one real server (in this process, auth required, no workers); the
database cases run on SQLite and PostgreSQL. `python -m service.cli.main` stands in for
the `hpo` script where none is installed; it must behave the same (before one client module,
the groups raised the error class of a second copy of `service.cli.main`, which main()
did not catch)."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from service.access.tokens import create_token
from service.app.main import create_app
from service.client import Client
from service.core.db.engine import get_engine, session_scope
from service.core.db.migrate import alembic_config, upgrade
from service.core.db.models import TrialRecord
from service.core.settings import Settings
from service.studies.service import create_study
from service.studies.spec import StudySpec
from service.worker.process import WorkerProcess
from tests.conftest import (
    PG_ENV,
    backends,
    free_port,
    migrated_database,
    postgres_database,
    tiny_spec,
)
from tests.test_e2e import hpo_command

UNREACHABLE = "http://127.0.0.1:1"  # nothing listens on port 1
DB_DOWN = "postgresql+psycopg://hpo:secret@127.0.0.1:1/hpo"  # refused at once
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def hpo(
    *args: str, env: dict[str, str] | None = None, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """The real `hpo` program, without the HPO_ variables of the test's environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    return subprocess.run(
        [*hpo_command(), *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def assert_one_line(out: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    """Exit `code`, and stderr is exactly one line matching `pattern`, no traceback."""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == code, (out.returncode, out.stderr)
    assert out.stderr.count("\n") == 1, out.stderr
    assert re.fullmatch(pattern, out.stderr.strip()), out.stderr


# ---- the REST commands, against one real server ------------------------------------------


@dataclass
class Api:
    url: str
    admin: str  # tokens
    reader: str
    files: Path  # spec files and such
    not_hpo: str  # a web server that is not the service
    database_url: str
    study: str  # a completed study of one trial (with a model), by name
    trial_id: int


class NotHpo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>\n<h1>Welcome to nginx!</h1>\n</body></html>\n"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


SPEC_FILES = {
    "bad-syntax.yaml": "name: x\n  space: [\n",
    "bad-syntax.json": '{"name": "x",}',
    "a-list.yaml": "- name: x\n",
    "empty.yaml": "",
    "binary.yaml": "name: x\nfixed:\n  blob: !!binary aGVsbG8=\n",
    "unknown-field.yaml": (
        "name: cli-unknown-field\ncolour: red\ndataset: {name: moons}\n"
        "space: {lr: {type: float, low: 0.001, high: 0.1}}\nbudget: {n_trials: 1}\n"
    ),
    "ok.yaml": (
        "name: cli-ok\ndataset: {name: moons}\nbudget: {n_trials: 1}\n"
        "space: {lr: {type: float, low: 0.001, high: 0.1}}\n"
    ),
    "warned.yaml": (  # a `when` value the space never offers: accepted, with a warning
        "name: cli-warned\ndataset: {name: moons}\nbudget: {n_trials: 1}\nspace:\n"
        "  optimizer: {type: categorical, choices: [momentum, adam]}\n"
        "  momentum: {type: float, low: 0.8, high: 0.95,"
        " when: {optimizer: [momentum, nesterov]}}\n"
    ),
}


@pytest.fixture(scope="module", params=backends())
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The real app under uvicorn with auth required, on a private migrated database."""
    for url in migrated_database(request.param, tmp_path_factory):
        with session_scope(url) as session:
            admin = create_token(session, "cli-admin", "admin")[1]
            reader = create_token(session, "cli-reader", "read")[1]
        port = free_port()
        settings = Settings(database_url=url, auth="required")
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotHpo)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        files = tmp_path_factory.mktemp("cli-files")
        for name, content in SPEC_FILES.items():
            (files / name).write_text(content)
        # One finished trial (well under a second), for the commands that print one.
        with session_scope(url) as session:
            spec = StudySpec.model_validate(tiny_spec("cli-done", n_trials=1))
            study_id = create_study(session, spec).id
        WorkerProcess(settings).run(until_idle=True, install_signals=False)
        with session_scope(url) as session:
            trial_id = session.scalars(
                select(TrialRecord.id).where(TrialRecord.study_id == study_id)
            ).one()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        csv = "a,b,label\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40))
        (files / "data.csv").write_text(csv)
        with Client(f"http://127.0.0.1:{port}", admin) as client:
            client.upload_dataset("cli-set", csv.encode(), "data.csv", "label")
        try:
            yield Api(
                f"http://127.0.0.1:{port}",
                admin,
                reader,
                files,
                f"http://127.0.0.1:{other.server_address[1]}",
                url,
                "cli-done",
                trial_id,
            )
        finally:
            other.shutdown()
            other.server_close()
            server.should_exit = True
            thread.join(timeout=10)


@dataclass(frozen=True)
class Rest:
    args: Callable[[Api], list[str]]
    code: int
    stderr: str  # a regular expression for the whole line


def as_admin(*args: str) -> Callable[[Api], list[str]]:
    return lambda a: [*args, "--url", a.url, "--token", a.admin]


def with_file(cmd: str, name: str, token: str = "admin") -> Callable[[Api], list[str]]:
    return lambda a: [cmd, str(a.files / name), "--url", a.url, "--token", getattr(a, token)]


REST_CASES = {
    # the service unreachable, from every command group
    "unreachable status": Rest(
        lambda a: ["status", "demo", "--url", UNREACHABLE],
        1,
        rf"error: cannot reach the service at {UNREACHABLE}: .*Connection refused.*",
    ),
    "unreachable report": Rest(
        lambda a: ["report", "demo", "--url", UNREACHABLE], 1, "error: cannot reach .*"
    ),
    "unreachable trial diagnosis": Rest(
        lambda a: ["trial", "1", "--diagnosis", "--url", UNREACHABLE], 1, "error: cannot reach .*"
    ),
    "unreachable workers": Rest(
        lambda a: ["workers", "--url", UNREACHABLE], 1, "error: cannot reach .*"
    ),
    "unreachable dataset list": Rest(
        lambda a: ["dataset", "list", "--url", UNREACHABLE], 1, "error: cannot reach .*"
    ),
    "a URL that is not one": Rest(
        lambda a: ["studies", "--url", "http://[::1"], 1, r"error: cannot .*http://\[::1.*"
    ),
    "a server that is not the service": Rest(
        lambda a: ["studies", "--url", a.not_hpo],
        1,
        r"error: http://127\.0\.0\.1:\d+/api/studies\?limit=1000&offset=0 answered 200 with a "
        r"body that is not JSON: is http://127\.0\.0\.1:\d+ the hpo service\?",
    ),
    # tokens
    "no token": Rest(
        lambda a: ["studies", "--url", a.url],
        1,
        r"error: 401: authentication required.* \(give a token with --token or HPO_TOKEN\)",
    ),
    "a wrong token": Rest(
        lambda a: ["studies", "--url", a.url, "--token", "hpo_" + "x" * 43],
        1,
        r"error: 401: .*\(give a token with --token or HPO_TOKEN\)",
    ),
    "a token without the role": Rest(
        with_file("submit", "ok.yaml", token="reader"),
        1,
        r"error: 403: token 'cli-reader' has role read; needs submit",
    ),
    # unknown things
    "unknown study id": Rest(as_admin("status", "424242"), 1, r"error: 404: .*424242.*"),
    "unknown study name": Rest(
        as_admin("best", "no-such-study"), 1, r"error: no study named 'no-such-study'"
    ),
    "unknown trial": Rest(as_admin("trial", "424242"), 1, r"error: 404: .*424242.*"),
    "unknown trial's diagnosis": Rest(
        as_admin("trial", "424242", "--diagnosis"), 1, r"error: 404: .*424242.*"
    ),
    "unknown trial's model": Rest(as_admin("model", "424242"), 1, r"error: 404: .*"),
    "unknown dataset": Rest(as_admin("dataset", "show", "no-such-set"), 1, r"error: 404: .*"),
    "unknown study's learning curve": Rest(
        as_admin("learning-curve", "424242", "--status"), 1, r"error: 404: .*"
    ),
    # bad spec files
    "a YAML syntax error": Rest(
        with_file("submit", "bad-syntax.yaml"),
        1,
        r"error: .*bad-syntax\.yaml: invalid YAML at line 2, column 8: mapping values are "
        r"not allowed here",
    ),
    "a JSON syntax error": Rest(
        with_file("submit", "bad-syntax.json"),
        1,
        r"error: .*bad-syntax\.json: invalid JSON at line 1, column 14: Expecting property "
        r"name enclosed in double quotes",
    ),
    "a spec that is a list": Rest(
        lambda a: [*with_file("submit", "a-list.yaml")(a), "--name", "x"],
        1,
        r"error: .*a-list\.yaml: a study spec is a mapping of fields .*, not a list",
    ),
    "an empty spec": Rest(
        with_file("submit", "empty.yaml"), 1, r"error: .*empty\.yaml: .*, not nothing"
    ),
    "a value JSON cannot carry": Rest(
        with_file("submit", "binary.yaml"),
        1,
        r"error: .*binary\.yaml: fixed\.blob: bytes is not a JSON value",
    ),
    "an unknown field": Rest(
        with_file("submit", "unknown-field.yaml"),
        1,
        r"error: 422: invalid request: colour: Extra inputs are not permitted",
    ),
    "a missing spec file": Rest(
        with_file("submit", "missing.yaml"),
        1,
        r"error: cannot read .*missing\.yaml: \[Errno 2\] No such file or directory: .*",
    ),
    "a missing dataset file": Rest(
        lambda a: ["dataset", "upload", str(a.files / "missing.npz"), "--name", "x"],
        1,
        r"error: cannot read .*missing\.npz: .*",
    ),
    "a model to a folder that does not exist": Rest(
        lambda a: [*as_admin("model", str(a.trial_id))(a), "-o", "/nonexistent/dir/x.pt"],
        1,
        r"error: cannot write /nonexistent/dir/x\.pt: \[Errno 2\] No such file or directory: .*",
    ),
    "a model to a folder's name": Rest(
        lambda a: [*as_admin("model", str(a.trial_id))(a), "-o", str(a.files)],
        1,
        r"error: cannot write .*: \[Errno 21\] Is a directory: .*",
    ),
    # an accepted spec the service warns about: each warning one line, exit 0
    "a spec with a warning": Rest(
        with_file("submit", "warned.yaml"),
        0,
        r"warning: space\.momentum\.when\.optimizer: 'nesterov' is not among the values "
        r"space\.optimizer takes, so momentum is searched only when optimizer is one of "
        r"\['momentum'\]",
    ),
    "a query out of range": Rest(
        as_admin("trials", "1", "--limit", "100000"),
        1,
        r"error: 4\d\d: .*",
    ),
    # usage errors are argparse's: its usage line and one error line, exit 2
}


@pytest.mark.parametrize("case", REST_CASES.values(), ids=REST_CASES.keys())
def test_rest_command_errors_are_one_line(api: Api, case: Rest) -> None:
    assert_one_line(hpo(*case.args(api)), case.code, case.stderr)


def test_a_usage_error_exits_2_without_a_traceback() -> None:
    out = hpo("workers", "--status", "sleeping")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[-1].startswith("hpo workers: error: argument --status")


def test_ctrl_c_of_a_client_command_exits_130(tmp_path: Path) -> None:
    """A request that hangs (the server accepts the connection, never answers) and Ctrl-C."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        proc = subprocess.Popen(
            [*hpo_command(), "studies", "--url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        listener.settimeout(60)
        conn, _ = listener.accept()  # the command is waiting for the answer now
        with conn:
            conn.recv(4096)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "interrupted\n" and out == ""


def test_output_closed_early_exits_141_quietly(api: Api) -> None:
    """`hpo workers | head -0`: the reader is gone before the command writes (whether
    Python buffers its output or not)."""
    for buffered in ("", "1"):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            args = ("workers", "--url", api.url, "--token", api.admin)
            out = hpo(*args, env={"PYTHONUNBUFFERED": buffered}, stdout=write_end)
        finally:
            os.close(write_end)
        assert out.returncode == 141, out.stderr
        assert out.stderr == ""


def printing_commands(a: Api, tmp: Path) -> dict[str, list[str]]:
    """Every `hpo` command that prints to stdout, each run so that it succeeds."""
    rest = ["--url", a.url, "--token", a.admin]
    db = ["--database-url", a.database_url]
    s, t = a.study, str(a.trial_id)
    return {
        "submit": ["submit", str(a.files / "ok.yaml"), "--name", f"cli-pipe-{tmp.name}", *rest],
        "studies": ["studies", *rest],
        "status": ["status", s, *rest],
        "watch": ["watch", s, "--interval", "0.1", *rest],
        "trials": ["trials", s, *rest],
        "best": ["best", s, *rest],
        "stop": ["stop", s, *rest],
        "trial": ["trial", t, *rest],
        "trial --diagnosis": ["trial", t, "--diagnosis", *rest],
        "model": ["model", t, "-o", str(tmp / "model.pt"), *rest],
        "report": ["report", s, *rest],
        "report --json": ["report", s, "--json", *rest],
        "workers": ["workers", *rest],
        "dataset upload": [
            "dataset",
            "upload",
            str(a.files / "data.csv"),
            "--name",
            f"pipe-{tmp.name}",
            "--target",
            "label",
            *rest,
        ],
        "dataset list": ["dataset", "list", *rest],
        "dataset show": ["dataset", "show", "cli-set", *rest],
        "dataset delete": ["dataset", "delete", f"del-{tmp.name}", *rest],  # uploaded first
        "token create": ["token", "create", "--name", f"pipe-{tmp.name}", "--role", "read", *db],
        "token list": ["token", "list", *db],
        "db upgrade": ["db", "upgrade", *db],
        "worker-health": ["worker-health", *db],
    }


PRINTING = list(printing_commands(Api("", "", "", Path(), "", "", "", 0), Path()))


@pytest.mark.parametrize("name", PRINTING)
def test_every_printing_command_exits_141_quietly_when_its_output_is_closed(
    api: Api, tmp_path: Path, name: str
) -> None:
    """`hpo trial 3 --diagnosis | head -5` printed a BrokenPipeError traceback: every
    command's output goes through main()'s guard. Unbuffered, the write fails at the first
    print, in the middle of the command (buffered, at main()'s final flush)."""
    args = printing_commands(api, tmp_path)[name]
    if name == "dataset delete":
        with Client(api.url, api.admin) as client:
            content = (api.files / "data.csv").read_bytes()
            client.upload_dataset(f"del-{tmp_path.name}", content, "data.csv", "label")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = hpo(*args, env={"PYTHONUNBUFFERED": "1"}, stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 141, out.stderr
    # What a command says on stderr beside its output (the token's description) may stay.
    assert "Error" not in out.stderr and "error" not in out.stderr, out.stderr


# ---- the commands that open the database, on SQLite and PostgreSQL ------------------------


@dataclass(frozen=True)
class Db:
    args: list[str]
    stderr: str


NOT_MIGRATED = r"error: the database at .* has no hpo tables yet: run `hpo db upgrade` with the same --database-url / --data-dir first"  # noqa: E501
DB_CASES = {
    "token create": Db(["token", "create", "--name", "first", "--role", "admin"], NOT_MIGRATED),
    "token list": Db(["token", "list"], NOT_MIGRATED),
    "token revoke": Db(["token", "revoke", "first"], NOT_MIGRATED),
    "worker-health": Db(["worker-health"], NOT_MIGRATED),
    "serve --no-migrate": Db(["serve", "--no-migrate", "--workers", "0"], NOT_MIGRATED),
    "worker": Db(["worker", "--device", "cpu"], NOT_MIGRATED),
}


@pytest.fixture(params=backends())
def never_migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that exists and is empty: a SQLite file with no tables, or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
        with get_engine(url).connect():
            pass
        yield url
    else:
        yield from postgres_database(os.environ[PG_ENV])


@pytest.mark.parametrize("case", DB_CASES.values(), ids=DB_CASES.keys())
def test_a_never_migrated_database_says_to_upgrade(never_migrated: str, case: Db) -> None:
    out = hpo(*case.args, "--database-url", never_migrated)
    assert_one_line(out, 1, case.stderr)


def test_a_missing_data_dir_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    for args in (["token", "create", "--name", "first", "--role", "admin"], ["token", "list"]):
        out = hpo(*args, "--data-dir", str(missing))
        assert_one_line(
            out, 1, rf"error: no database at {re.escape(str(missing))}/hpo\.db: run `hpo db .*"
        )
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["token", "create", "--name", "first", "--role", "admin"],
        ["token", "list"],
        ["token", "revoke", "first"],
        ["worker-health"],
        ["db", "upgrade"],
        ["serve", "--workers", "0"],
    ],
    ids=" ".join,
)
def test_a_database_that_is_down_is_one_line(args: list[str]) -> None:
    out = hpo(*args, "--database-url", DB_DOWN)
    assert_one_line(
        out,
        1,
        r"error: cannot use the database at postgresql\+psycopg://hpo:\*\*\*@127\.0\.0\.1:1/hpo:"
        r" connection failed: .*Connection refused",
    )
    assert "secret" not in out.stderr


@pytest.mark.parametrize(
    ("args", "env", "stderr"),
    [
        (
            ["token", "list", "--database-url", "not a url"],
            {},
            r"error: invalid database URL \(--database-url or HPO_DATABASE_URL\): Could not "
            r"parse SQLAlchemy URL from given URL string",
        ),
        (
            ["token", "list", "--database-url", "mysql://u:secret@db/hpo"],
            {},
            r"error: no database driver for mysql://u:\*\*\*@db/hpo: No module named .*",
        ),
        (
            ["token", "list"],
            {"HPO_PORT": "http"},
            r"error: invalid setting port \(HPO_PORT or its option\): Input should be a valid "
            r"integer.*",
        ),
        (
            ["serve", "--workers", "-1"],
            {},
            r"error: invalid setting workers \(HPO_WORKERS or its option\): Input should be "
            r"greater than or equal to 0",
        ),
    ],
    ids=["url", "driver", "env", "option"],
)
def test_bad_settings_are_one_line(args: list[str], env: dict[str, str], stderr: str) -> None:
    assert_one_line(hpo(*args, env=env), 1, stderr)


def test_serve_on_a_port_in_use_ends_with_one_error_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = f"sqlite:///{tmp_path / 'hpo.db'}"
        out = hpo("serve", "--workers", "0", "--port", str(port), "--database-url", db)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "address already in use" in out.stderr  # uvicorn's own log line says why
    assert (
        out.stderr.splitlines()[-1]
        == f"error: could not serve on 127.0.0.1:{port} (see the log above)"
    )


def set_revision(url: str, revision: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE hpo_alembic_version SET version_num = :r"), {"r": revision})


def test_db_upgrade_says_what_it_did_and_an_old_schema_is_named(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    out = hpo("db", "upgrade", "--database-url", url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("created the tables of the database at ")
    assert out.stdout.strip().endswith(f"(schema revision {HEAD})")

    out = hpo("db", "upgrade", "--database-url", url)
    assert out.stdout.strip().endswith(f"is up to date (schema revision {HEAD})"), out.stdout

    command.downgrade(alembic_config(url), "0005")
    out = hpo("token", "list", "--database-url", url)
    assert_one_line(
        out,
        1,
        rf"error: the database at .* is at schema revision 0005, this version of hpo needs "
        rf"{HEAD}: run `hpo db upgrade` .*",
    )
    out = hpo("db", "upgrade", "--database-url", url)
    assert out.stdout.strip().endswith(f"from schema revision 0005 to {HEAD}"), out.stdout

    set_revision(url, "9999")  # migrated by a newer hpo
    out = hpo("token", "list", "--database-url", url)
    assert_one_line(
        out,
        1,
        r"error: the database at .* is at schema revision 9999, which this version of hpo "
        r"does not know \(a newer one migrated it\): upgrade hpo",
    )
    set_revision(url, HEAD)
    upgrade(url)


def test_python_m_is_the_same_program() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service.cli.main", "status", "demo", "--url", UNREACHABLE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line(out, 1, rf"error: cannot reach the service at {UNREACHABLE}: .*")


# ---- Ctrl-C at any moment of a process's life: 130, quietly, nothing left running --------


class Started:
    """`hpo ARGS` as a terminal's foreground job (its own process group, which a Ctrl-C
    signals as a whole), its stderr read as it comes. With PYTHONPROFILEIMPORTTIME each
    import it (or a worker it starts) finishes is a line there: a hook into the phases of
    its start-up. `trigger`: the texts that lines must contain, one after the other."""

    def __init__(self, *args: str, trigger: tuple[str, ...]) -> None:
        self.trigger = list(trigger)
        self.lines: list[str] = []
        self.triggered = threading.Event()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
        self.proc = subprocess.Popen(
            [*hpo_command(), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**clean, "PYTHONPROFILEIMPORTTIME": "1", "HPO_WORKER_POLL_SECONDS": "0.2"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if self.trigger and self.trigger[0] in line:
                self.trigger.pop(0)
                if not self.trigger:
                    self.triggered.set()

    def ctrl_c_when_triggered(self, timeout: float = 300) -> int:
        """Wait for the trigger line, SIGINT the process group; the exit code."""
        try:
            assert self.triggered.wait(timeout), f"no {self.trigger!r}:\n{self.log()}"
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                code = self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running after Ctrl-C:\n{self.log()}") from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code

    def log(self) -> str:
        """stderr without the import-time lines."""
        return "".join(x for x in self.lines if not x.startswith("import time:"))


def processes_naming(text: str) -> list[str]:
    """The command lines of the processes that mention `text` (a database file)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if any(text.encode() in a for a in args):
                found.append(" ".join(a.decode(errors="replace") for a in args))
    return found


def worker_records(url: str) -> list[str]:
    with session_scope(url) as session:
        return list(session.scalars(text("SELECT status FROM hpo_workers")).all())


# The moment of `hpo serve --workers 1`'s start-up the Ctrl-C lands in: the tester's 0.3 to
# 1.5 s after the start, as the line on stderr that announces each phase.
SERVE_PHASES = {
    "loading the commands": (" httpx\n",),  # an import of main(): before, a traceback
    "migrating": (" service.core.db.migrate\n",),  # imported; upgrade() runs next
    # serve imported httpx long before: this is its worker, loading the commands
    "starting its worker": ("serving http://", " httpx\n"),
    "serving": (" started on cpu (pid ",),  # the worker has registered
}


@pytest.mark.slow
@pytest.mark.parametrize("trigger", SERVE_PHASES.values(), ids=SERVE_PHASES.keys())
def test_ctrl_c_stops_serve_at_any_moment_of_its_start(
    tmp_path: Path, trigger: tuple[str, ...]
) -> None:
    """Ctrl-C during `hpo serve`'s start-up: it (and its worker) stop, exit 130, no
    traceback from either (a worker still importing when the group's SIGINT came printed
    one; before that, so did serve's own imports)."""
    db = tmp_path / "hpo.db"
    url = f"sqlite:///{db}"
    args = ["serve", "--port", str(free_port()), "--workers", "1", "--device", "cpu"]
    serve = Started(*args, "--database-url", url, "--log-level", "info", trigger=trigger)
    assert serve.ctrl_c_when_triggered() == 130, serve.log()
    log = serve.log()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert processes_naming(str(db)) == []  # its worker did not outlive it
    if db.exists() and trigger == SERVE_PHASES["serving"]:
        assert worker_records(url) == ["stopped"], log


WORKER_PHASES = {
    "one, importing torch": (1, (" torch\n",)),
    "one, running": (1, (" started on cpu (pid ",)),
    "a pool of two, running": (2, (" started on cpu (pid ",)),
}


@pytest.mark.slow
@pytest.mark.parametrize(("processes", "trigger"), WORKER_PHASES.values(), ids=WORKER_PHASES.keys())
def test_ctrl_c_of_hpo_worker_exits_130_after_its_clean_stop(
    tmp_path: Path, processes: int, trigger: tuple[str, ...]
) -> None:
    """A single `hpo worker` exited 0 on Ctrl-C, while `hpo serve` and a pool exit 130: it
    stops as on SIGTERM (records its stop) and exits 130 too."""
    db = tmp_path / "hpo.db"
    url = f"sqlite:///{db}"
    upgrade(url)
    args = ["worker", "--device", "cpu", "--trials-per-gpu", str(processes)]
    worker = Started(*args, "--database-url", url, "--log-level", "info", trigger=trigger)
    assert worker.ctrl_c_when_triggered() == 130, worker.log()
    log = worker.log()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert processes_naming(str(db)) == []
    if processes == 2:  # the Ctrl-C may come before the second one registered
        assert set(worker_records(url)) == {"stopped"}, log
    elif trigger == WORKER_PHASES["one, running"][1]:
        assert worker_records(url) == ["stopped"], log
