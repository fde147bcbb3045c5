"""Fixtures: real databases (a SQLite file, and PostgreSQL when HPO_TEST_DATABASE_URL is
set), migrated with the project's own `hpo db upgrade` code, and apps built on them."""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from service.app.main import create_app
from service.core.db.migrate import upgrade
from service.core.settings import Settings

if TYPE_CHECKING:
    from tests.test_e2e import Service

PG_ENV = "HPO_TEST_DATABASE_URL"

DIGITS_SPEC: dict[str, Any] = {
    "name": "digits-demo",
    "dataset": {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    "model": {"family": "mlp"},
    "objective": {"metric": "val_accuracy", "direction": "maximize", "max_epochs": 20},
    "space": {
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
        "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam", "rmsprop"]},
    },
    "fixed": {"hidden_layers": 2, "hidden_units": 128, "activation": "relu"},
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "median"},
    "budget": {"n_trials": 6},
}


def tiny_spec(name: str, n_trials: int = 2, **overrides: Any) -> dict[str, Any]:
    """A study whose trials take well under a second: moons, 2 epochs."""
    spec: dict[str, Any] = {
        "name": name,
        "dataset": {"name": "moons", "n_samples": 200, "noise": 0.2},
        "objective": {"metric": "val_accuracy", "max_epochs": 2},
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
            "batch_size": {"type": "categorical", "choices": [16, 32]},
        },
        "fixed": {"hidden_layers": 1, "hidden_units": 16},
        "sampler": {"name": "random", "seed": 1},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
    }
    spec.update(overrides)
    return spec


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def postgres_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A fresh database on the server of `admin_url` (a copy of the database `template` if
    given), dropped afterwards."""
    test_url = create_postgres_database(admin_url, template)
    try:
        yield test_url
    finally:
        drop_postgres_database(admin_url, test_url)


def create_postgres_database(admin_url: str, template: str | None = None) -> str:
    """The URL of a new database on the server of `admin_url`; the caller drops it."""
    import psycopg

    url = make_url(admin_url)
    name = f"hpo_test_{uuid.uuid4().hex[:10]}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, test_url: str) -> None:
    """Closes this process's connections to the database of `test_url`, then drops it."""
    import psycopg

    from service.core.db.engine import get_engine
    from service.core.optuna_storage import get_storage

    get_engine(test_url).dispose()
    get_storage(test_url).engine.dispose()
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{make_url(test_url).database}" WITH (FORCE)')


def one_database(tmp: Path) -> Iterator[str]:
    """An unmigrated database for tests whose subject is not the database (one backend keeps
    the suite short; the claims, API and migration tests run on both): PostgreSQL, what GPU
    nodes share, when HPO_TEST_DATABASE_URL is set, else a SQLite file under `tmp`."""
    if os.environ.get(PG_ENV):
        yield from postgres_database(os.environ[PG_ENV])
    else:
        yield f"sqlite:///{tmp / 'hpo.db'}"


def backends() -> list[Any]:
    params: list[Any] = ["sqlite"]
    params.append(
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} not set"),
        )
    )
    return params


# backend -> a database migrated once in this pytest process, copied for each test module.
_TEMPLATES: dict[str, str] = {}


def migrated_template(backend: str, tmp: pytest.TempPathFactory) -> str:
    """The URL of this process's migrated `backend` database that `migrated_database` copies
    (PostgreSQL: a database of the server; SQLite: a file). Nothing may connect to it once
    it is made: PostgreSQL copies only a database nobody is connected to."""
    if backend not in _TEMPLATES:
        if backend == "sqlite":
            url = f"sqlite:///{tmp.mktemp('template') / 'hpo.db'}"
        else:
            url = create_postgres_database(os.environ[PG_ENV])  # dropped by sessionfinish
        upgrade(url)
        from service.core.db.engine import get_engine
        from service.core.optuna_storage import get_storage

        get_engine(url).dispose()
        get_storage(url).engine.dispose()
        _TEMPLATES[backend] = url
    return _TEMPLATES[backend]


def migrated_database(backend: str, tmp: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database of `backend` ("sqlite" or "postgresql"), migrated: a copy of
    `migrated_template`, which is what `hpo db upgrade` makes (tests/test_db.py runs the
    migrations themselves), in milliseconds instead of half a second."""
    template = migrated_template(backend, tmp)
    if backend == "sqlite":
        path = tmp.mktemp("db") / "hpo.db"
        source = sqlite3.connect(make_url(template).database or "")
        target = sqlite3.connect(path)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        yield f"sqlite:///{path}"
    else:
        yield from postgres_database(os.environ[PG_ENV], template=make_url(template).database)


@pytest.fixture(scope="module", params=backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database per test module and backend, shared by the module's tests (unique
    names keep them apart). Per module, so that what one module leaves behind (studies with
    budget left, queued learning-curve jobs) never reaches the workers another module runs."""
    yield from migrated_database(request.param, tmp_path_factory)


@pytest.fixture(params=backends())
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet, one per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        yield from postgres_database(os.environ[PG_ENV])


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        max_trials=50,
        max_epochs=100,
        worker_poll_seconds=0.05,
        heartbeat_seconds=0.5,
        torch_threads=1,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Servers told to exit, joined at the end of the session (see `server_url`).
_STOPPING: list[threading.Thread] = []


@pytest.fixture
def server_url(settings: Settings) -> Iterator[str]:
    """The real app under a real uvicorn server, in a thread of this process: a fresh app and
    server per test (about 420 tests use one)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.002)
    yield f"http://127.0.0.1:{port}"
    # uvicorn notices `should_exit` at its next 0.1 s tick and then sleeps 0.1 s more before
    # it closes: the next test need not wait for that (the port is this server's own, and
    # the test's client is closed already). The session joins these threads at its end.
    server.should_exit = True
    _STOPPING[:] = [t for t in _STOPPING if t.is_alive()]
    _STOPPING.append(thread)


def pytest_sessionfinish() -> None:
    for thread in _STOPPING:
        thread.join(timeout=10)
    if "postgresql" in _TEMPLATES:
        drop_postgres_database(os.environ[PG_ENV], _TEMPLATES.pop("postgresql"))


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One SSL context for every test client: httpx builds one per client otherwise, loading
    the CA bundle each time (about 50 ms of CPU), although the tests speak plain HTTP."""
    return httpx.create_ssl_context()


def http_client(base_url: str, **kwargs: Any) -> httpx.Client:
    """An httpx client of the service at `base_url` (a 30 s timeout unless given)."""
    kwargs.setdefault("timeout", 30)
    return httpx.Client(base_url=base_url, verify=tls_context(), **kwargs)


@pytest.fixture
def client(server_url: str) -> Iterator[httpx.Client]:
    with http_client(server_url) as c:
        yield c


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`hpo serve` with 2 local worker processes on a SQLite file, shared by the end-to-end
    modules whose tests neither stop the service nor kill it (a killed worker is replaced by
    its supervisor); unique study names keep them apart. Each start costs a server and two
    workers importing torch, which dominated those modules on a loaded 2-core machine."""
    from tests.test_e2e import Service  # a test module: imported after this conftest

    svc = Service(tmp_path_factory.mktemp("served"), workers=2)
    yield svc
    assert svc.stop() == 0, svc.log()
