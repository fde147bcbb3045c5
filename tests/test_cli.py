"""No Python traceback reaches a CLI user for an expected condition: each case runs the
real `hpo` program and gets one clear line on stderr and the exit code the README
documents (1 failed, 2 usage, 130 interrupted, 141 output closed).

The REST cases share one real server (in this process, auth required, no workers); the
database cases run on SQLite and PostgreSQL. `python -m service.cli.main` stands in for
the `hpo` script where none is installed; it must behave the same (before cli/client.py,
the groups raised the error class of a second copy of `service.cli.main`, which main()
did not catch)."""

from __future__ import annotations

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
from sqlalchemy import text

from service.access.tokens import create_token
from service.app.main import create_app
from service.core.db.engine import get_engine, session_scope
from service.core.db.migrate import alembic_config, upgrade
from service.core.settings import Settings
from tests.conftest import PG_ENV, backends, free_port, migrated_database, postgres_database
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
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield Api(
                f"http://127.0.0.1:{port}",
                admin,
                reader,
                files,
                f"http://127.0.0.1:{other.server_address[1]}",
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
        r"error: http://127\.0\.0\.1:\d+/api/studies answered 200 with a body that is not "
        r"JSON: is --url the hpo service\?",
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


# ---- the commands that open the database, on SQLite and PostgreSQL ------------------------


@dataclass(frozen=True)
class Db:
    args: list[str]
    stderr: str


NOT_MIGRATED = r"error: the database at .* has no hpo tables yet: run `hpo db upgrade` with the same --database-url / --data-dir first"  # noqa: E501
DB_CASES = {
    "token create": Db(["token", "create", "--name", "first", "--role", "admin"], NOT_MIGRATED),
    "token list": Db(["token", "list"], NOT_MIGRATED),
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
