"""A worker killed with SIGKILL at every step of a trial's life loses nothing and counts
nothing twice (issue 17 §2).

For each crash point of `service.worker.faults` a real worker process arms `HPO_FAULT_AT`
and kills itself exactly there, on the first trial it claims (an enqueued configuration) of
its own study. Once its heartbeat is older than the grace period a fresh worker starts: its
first sweep reaps the dead, and it runs what is left. Then each study must be completed with
exactly its budget of finished trials, nothing RUNNING anywhere, every enqueued
configuration finished exactly once, and its status and counters equal to the states they
count. The victims run side by side (one study each) to keep the matrix fast.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import TrialRecord, Worker, utcnow
from service.studies.service import create_study
from service.studies.spec import StudySpec
from service.worker.faults import POINTS
from tests.conftest import tiny_spec, unique
from tests.study_checks import check_quiet_study, start_worker, worker_settings

pytestmark = pytest.mark.slow  # real worker processes

GRACE_S = 1.0
N_TRIALS = 3
ENQUEUED = [{"lr": 0.011, "batch_size": 16}, {"lr": 0.022, "batch_size": 32}]

# What the killed trial becomes. Killed before its Optuna trial exists, its claim is only
# released (no failure); after, it is failed and re-run with its parameters, unless Optuna
# already had its final state, which is kept.
EXPECTED = {
    "after_claim": "released",
    "after_create": "fail",
    "after_attach": "fail",
    "mid_train": "fail",
    "before_tell": "fail",
    "after_tell": "complete",
    "after_finish": "complete",
}


def test_every_crash_point_is_covered() -> None:
    assert tuple(EXPECTED) == POINTS


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass(frozen=True)
class Killed:
    """One cell of the matrix: the study, and the claim its worker died holding."""

    study_id: int
    record_id: int
    worker_id: int


def new_study(url: str, point: str) -> tuple[int, str]:
    name = unique(f"kill-{point.replace('_', '-')}")
    raw = tiny_spec(name, N_TRIALS, enqueue=ENQUEUED)
    raw["objective"] = {"metric": "val_accuracy", "max_epochs": 1}
    raw["budget"] = {"n_trials": N_TRIALS, "max_retries": 1}
    with session_scope(url) as session:
        return create_study(session, StudySpec.model_validate(raw)).id, name


@pytest.fixture(scope="module")
def matrix(database_url: str) -> dict[str, Killed]:
    """The whole matrix at once, one study per crash point: every victim (each with its
    point armed) runs at the same time, then one fresh worker recovers all the studies."""
    studies = {point: new_study(database_url, point) for point in EXPECTED}
    # The victims' own sweeps must not declare each other dead while they share 2 CPUs.
    patient = worker_settings(database_url, grace_seconds=600)
    victims = {
        point: start_worker(patient, [name], fault=point) for point, (_, name) in studies.items()
    }
    for point, victim in victims.items():
        victim.join(timeout=600)
        assert victim.exitcode == -signal.SIGKILL, f"the worker was not killed at {point}"
    killed: dict[str, Killed] = {}
    with session_scope(database_url) as session:
        for point, (study_id, _) in studies.items():
            claim = session.scalars(
                select(TrialRecord).where(TrialRecord.study_id == study_id)
            ).one()  # it died on its first claim, the first enqueued configuration
            assert claim.enqueued_id is not None and claim.worker_id is not None
            killed[point] = Killed(study_id, claim.id, claim.worker_id)

    def silent() -> bool:
        cutoff = utcnow() - timedelta(seconds=GRACE_S)
        with session_scope(database_url) as session:
            beats = session.scalars(
                select(Worker.heartbeat_at).where(
                    Worker.id.in_([k.worker_id for k in killed.values()])
                )
            ).all()
        return all(beat < cutoff for beat in beats)

    wait_for(silent, 60, "the killed workers' heartbeats to age past the grace period")
    # Its first sweep reaps the dead; then it runs what is left of every study.
    fresh = start_worker(
        worker_settings(database_url, GRACE_S), [name for _, name in studies.values()]
    )
    fresh.join(timeout=600)
    assert fresh.exitcode == 0
    return killed


@pytest.mark.parametrize("point", list(EXPECTED))
def test_a_worker_killed_at_each_step_loses_nothing(
    database_url: str, matrix: dict[str, Killed], point: str
) -> None:
    killed = matrix[point]
    picture = check_quiet_study(database_url, killed.study_id)
    assert picture.status == "completed"
    assert len(picture.finished()) == N_TRIALS  # exactly the budget
    for config in ENQUEUED:
        assert picture.runs_of(config) == 1, (config, [t.params for t in picture.trials])
    with session_scope(database_url) as session:
        victim_claim = session.get(TrialRecord, killed.record_id)
        dead = session.get(Worker, killed.worker_id)
    assert victim_claim is not None and dead is not None
    assert dead.status == "dead"
    outcome = EXPECTED[point]
    if outcome == "released":
        assert victim_claim.optuna_trial_id is None
        assert picture.counts["fail"] == 0
        assert len(picture.trials) == N_TRIALS
    else:
        assert victim_claim.state == outcome
        assert picture.counts["fail"] == (1 if outcome == "fail" else 0)
        assert len(picture.trials) == N_TRIALS + picture.counts["fail"]
    if outcome == "fail":  # re-run once, with the same parameters, by the fresh worker
        # A trial killed before training has no params yet: its claim's are its fixed ones.
        ran = [(t, {**t.system_attrs.get("fixed_params", {}), **t.params}) for t in picture.trials]
        rerun = [t for t, params in ran if params.items() >= ENQUEUED[0].items()]
        assert [t.state.name for t in rerun] == ["FAIL", "COMPLETE"]
        retried = [r for r in picture.records if r.retry_of is not None]
        assert [r.retry_of for r in retried] == [victim_claim.optuna_trial_id]
