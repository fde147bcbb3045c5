"""Retrying database calls through short outages (a PostgreSQL restart, a locked SQLite file).

A worker in the middle of a trial should not fail the trial because the database went away
for ten seconds: its writes wait and retry with back-off. Engines use `pool_pre_ping`, so
the first attempt after the outage gets a fresh connection instead of a dead pooled one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import optuna
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("hpo.db")

T = TypeVar("T")

FIRST_WAIT_S = 0.5
MAX_WAIT_S = 10.0
GIVE_UP_AFTER_S = 300.0  # past this the caller's own recovery takes over


def is_transient(e: BaseException) -> bool:
    """An error that goes away when the database is back: lost or refused connections,
    server shutdown, lock timeouts. Constraint violations and bad SQL are not."""
    if isinstance(e, OperationalError | InterfaceError):
        return True
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return True
    if isinstance(e, optuna.exceptions.StorageInternalError):
        cause = e.__cause__ or e.__context__
        return cause is None or is_transient(cause)
    return False


def retry_db(
    fn: Callable[[], T],
    what: str,
    *,
    give_up_after_s: float = GIVE_UP_AFTER_S,
) -> T:
    """Call `fn` until it succeeds, waiting 0.5, 1, 2, ... 10 s between attempts while the
    error is transient; re-raise once `give_up_after_s` passed."""
    started = time.monotonic()
    wait = FIRST_WAIT_S
    while True:
        try:
            return fn()
        except Exception as e:
            elapsed = time.monotonic() - started
            if not is_transient(e) or elapsed > give_up_after_s:
                raise
            log.warning(
                "%s: database unavailable (%s); retry in %.1fs", what, type(e).__name__, wait
            )
            time.sleep(wait)
            wait = min(wait * 2, MAX_WAIT_S)
