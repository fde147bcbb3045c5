"""Engines and sessions for SQLite and PostgreSQL, configured for many worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Seconds a SQLite writer waits for the lock held by another process before failing.
SQLITE_BUSY_TIMEOUT_S = 60


def engine_kwargs(url: str) -> dict[str, Any]:
    """Keyword arguments for create_engine, shared with Optuna's RDBStorage."""
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def ensure_sqlite_dir(url: str) -> None:
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while a worker writes; foreign keys are off by default in SQLite.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    ensure_sqlite_dir(url)
    engine = create_engine(url, **engine_kwargs(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@lru_cache(maxsize=8)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    # The URL rides along in `Session.info`: a service function given a session can reach
    # Optuna's storage of the same database (`database_url`).
    return sessionmaker(get_engine(url), expire_on_commit=False, info={"url": url})


def database_url(session: Session) -> str:
    """The database URL a session of `get_sessionmaker` was made for, exactly as given."""
    url: str = session.info["url"]
    return url


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error: the unit of
    work of a caller outside a request (the CLI, the worker, tests)."""
    with get_sessionmaker(url)() as session, session.begin():
        yield session
