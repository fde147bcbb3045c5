"""A request is one unit of work: the API opens one session of ours per request (Optuna's
storage keeps its own sessions, not counted here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.orm import Session

from service.core.db.engine import get_engine
from tests.conftest import unique
from tests.test_dashboard_api import fill_study


@pytest.fixture
def our_sessions(database_url: str) -> Iterator[set[int]]:
    """Ids of the sessions that began a transaction on the service's engine."""
    engine = get_engine(database_url)
    seen: set[int] = set()

    def began(session: Session, _transaction: Any, connection: Any) -> None:
        if connection.engine is engine:
            seen.add(id(session))

    event.listen(Session, "after_begin", began)
    yield seen
    event.remove(Session, "after_begin", began)


def test_get_trial_opens_one_session(
    client: httpx.Client, database_url: str, our_sessions: set[int]
) -> None:
    _, trial_ids = fill_study(database_url, unique("uow"), [(TrialState.COMPLETE, 0.8)])
    # The first read computes and stores the trial's diagnosis (a write of its own, once).
    assert client.get(f"/api/trials/{trial_ids[0]}").status_code == 200
    our_sessions.clear()
    got = client.get(f"/api/trials/{trial_ids[0]}")
    assert got.status_code == 200 and got.json()["diagnosis"] is not None
    assert len(our_sessions) == 1


def test_a_refused_request_opens_one_session(client: httpx.Client, our_sessions: set[int]) -> None:
    assert client.get("/api/studies/999999").status_code == 404
    assert len(our_sessions) == 1
