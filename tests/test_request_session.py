"""A request is one unit of work: the API opens one session of ours per request (Optuna's
storage keeps its own sessions, not counted here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from optuna.trial import TrialState
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from service.access.tokens import create_token
from service.analysis import diagnoses
from service.core.db.engine import get_engine, session_scope
from service.core.db.models import TrialDiagnosis, TrialRecord
from service.core.settings import Settings
from tests.conftest import unique
from tests.test_dashboard_api import fill_study

PLAN = [(TrialState.COMPLETE, 0.8), (TrialState.COMPLETE, 0.6), (TrialState.PRUNED, None)]


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
    # The first read computes and stores the trial's diagnosis, in the request's session.
    our_sessions.clear()
    first = client.get(f"/api/trials/{trial_ids[0]}")
    assert first.status_code == 200 and first.json()["diagnosis"] is not None
    assert len(our_sessions) == 1
    our_sessions.clear()
    got = client.get(f"/api/trials/{trial_ids[0]}")
    assert got.status_code == 200 and got.json()["diagnosis"] == first.json()["diagnosis"]
    assert len(our_sessions) == 1


def test_a_refused_request_opens_one_session(client: httpx.Client, our_sessions: set[int]) -> None:
    assert client.get("/api/studies/999999").status_code == 404
    assert len(our_sessions) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/studies/{study}/report",
        "/api/studies/{study}/history",
        "/api/studies/{study}/curves",
        "/api/studies/{study}/importances",
        "/api/studies/{study}/learning-curve",
        "/api/trials/{trial}/curves",
    ],
)
def test_analysis_reads_open_one_session(
    client: httpx.Client, database_url: str, our_sessions: set[int], path: str
) -> None:
    study_id, trial_ids = fill_study(database_url, unique("uow"), PLAN)
    our_sessions.clear()
    # The report's first read also diagnoses and stores every finished trial.
    got = client.get(path.format(study=study_id, trial=trial_ids[0]))
    assert got.status_code in (200, 404), got.text  # 404: no learning curve queued yet
    assert len(our_sessions) == 1


def stored_ids(url: str, trial_ids: list[int]) -> set[int]:
    with session_scope(url) as session:
        return set(
            session.scalars(
                select(TrialDiagnosis.trial_id).where(TrialDiagnosis.trial_id.in_(trial_ids))
            )
        )


def test_the_reports_first_read_stores_the_diagnoses(
    client: httpx.Client, database_url: str
) -> None:
    study_id, trial_ids = fill_study(database_url, unique("uow"), PLAN)
    assert stored_ids(database_url, trial_ids) == set()
    first = client.get(f"/api/studies/{study_id}/report")
    assert first.status_code == 200 and first.json()["n_trials"] == 3
    assert stored_ids(database_url, trial_ids) == set(trial_ids)  # committed with the request
    assert client.get(f"/api/studies/{study_id}/report").json() == first.json()


def test_a_diagnosis_stored_concurrently_leaves_the_transaction_usable(database_url: str) -> None:
    _, trial_ids = fill_study(database_url, unique("uow"), [(TrialState.COMPLETE, 0.8)])
    with session_scope(database_url) as session:
        record = session.scalars(
            select(TrialRecord).where(TrialRecord.optuna_trial_id == trial_ids[0])
        ).one()
        with session_scope(database_url) as other:  # e.g. the worker, meanwhile
            other.add(TrialDiagnosis(trial_id=trial_ids[0], study_id=record.study_id, findings=[]))
        diagnoses._store(session, {record: [{"kind": "late"}]})  # loses the race: ignored
        assert diagnoses.stored(session, trial_ids) == {trial_ids[0]: []}


class TestAuthOn:
    """With auth on, the token lookup (in the gate before the body is read) and the route
    share the request's session."""

    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return Settings(database_url=database_url, auth="required")

    def test_an_authenticated_request_opens_one_session(
        self, client: httpx.Client, database_url: str, our_sessions: set[int]
    ) -> None:
        study_id, _ = fill_study(database_url, unique("uow"), PLAN)
        with session_scope(database_url) as session:
            token = create_token(session, unique("reader"), "read")[1]
        headers = {"Authorization": f"Bearer {token}"}
        for path in (f"/api/studies/{study_id}", f"/api/studies/{study_id}/report", "/api/workers"):
            our_sessions.clear()
            assert client.get(path, headers=headers).status_code == 200
            assert len(our_sessions) == 1, path
        our_sessions.clear()
        assert client.get(f"/api/studies/{study_id}").status_code == 401
        assert len(our_sessions) == 0  # no header: refused without a lookup
        bad = {"Authorization": "Bearer hpo_" + "x" * 43}
        assert client.get(f"/api/studies/{study_id}", headers=bad).status_code == 401
        assert len(our_sessions) == 1
