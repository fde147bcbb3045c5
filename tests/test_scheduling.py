"""Sharing workers between studies (priority, fairness, max_parallel_trials), retries of a
dead worker's trial with the same parameters, and how GPU slots are planned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from service.core.db.engine import session_scope
from service.core.db.models import EnqueuedConfig, Study, utcnow
from service.scheduling import claims
from service.studies.service import create_study, stop_study
from service.studies.spec import StudySpec
from service.worker.gpus import Slot, parse_gpus, plan_slots
from tests.conftest import tiny_spec, unique


def new_study(url: str, n_trials: int = 10, **overrides: object) -> tuple[int, str]:
    name = unique("sched")
    spec = StudySpec.model_validate(tiny_spec(name, n_trials, **overrides))
    with session_scope(url) as session:
        return create_study(session, spec).id, name


def row(url: str, study_id: int) -> Study:
    with session_scope(url) as session:
        study = session.get(Study, study_id)
        assert study is not None
        return study


def next_claim(url: str, only: list[str]) -> claims.Claim | None:
    """What a worker does: the first candidate study it can claim a slot of."""
    for study_id in claims.candidate_studies(url, only):
        claim = claims.claim_slot(url, study_id, None)
        if claim is not None:
            return claim
    return None


def test_equal_priority_studies_share_the_workers_fairly(database_url: str) -> None:
    a, name_a = new_study(database_url)
    b, name_b = new_study(database_url)
    c, name_c = new_study(database_url)
    got = [next_claim(database_url, [name_a, name_b, name_c]) for _ in range(9)]
    per_study = {s: sum(1 for g in got if g and g.study_id == s) for s in (a, b, c)}
    assert per_study == {a: 3, b: 3, c: 3}
    # A study whose trials finish gets the next claim: it has the fewest running.
    for g in got:
        if g and g.study_id == b:
            claims.finish_record(database_url, g.record_id, "complete")
            break
    nxt = next_claim(database_url, [name_a, name_b, name_c])
    assert nxt is not None and nxt.study_id == b
    assert (row(database_url, a).n_running, row(database_url, b).n_running) == (3, 3)


def test_higher_priority_first_and_max_parallel_trials_caps_running(database_url: str) -> None:
    low, name_low = new_study(database_url, priority=0)
    high, name_high = new_study(
        database_url, priority=5, budget={"n_trials": 10, "max_parallel_trials": 2}
    )
    names = [name_low, name_high]
    got = [next_claim(database_url, names) for _ in range(4)]
    # The high-priority study takes the first two workers, then it is at its cap of 2.
    assert [g.study_id if g else None for g in got] == [high, high, low, low]
    assert claims.claim_slot(database_url, high, None) is None
    assert high not in claims.candidate_studies(database_url, names)
    first = got[0]
    assert first is not None
    claims.finish_record(database_url, first.record_id, "pruned")
    nxt = next_claim(database_url, names)
    assert nxt is not None and nxt.study_id == high
    assert row(database_url, high).n_running == 2


def test_only_restricts_a_worker_to_named_studies(database_url: str) -> None:
    a, name_a = new_study(database_url)
    b, _ = new_study(database_url)
    assert claims.candidate_studies(database_url, [name_a]) == [a]
    assert claims.candidate_studies(database_url, [str(b)]) == [b]
    assert claims.candidate_studies(database_url, ["no-such-study"]) == []


def test_retry_reruns_the_same_params_once_and_is_not_counted_twice(database_url: str) -> None:
    study_id, _ = new_study(
        database_url, 1, budget={"n_trials": 1, "max_retries": 1, "max_failed_trials": 5}
    )
    first = claims.claim_slot(database_url, study_id, None)
    assert first is not None
    claims.attach_trial(database_url, first.record_id, 10_001, 0)
    params = {"lr": 0.0123, "batch_size": 32}
    # Its worker died: the slot goes back and one re-run is enqueued.
    assert claims.finish_record(
        database_url, first.record_id, "fail", error="worker died", retry_params=params
    )
    assert row(database_url, study_id).slots_used == 0
    retry = claims.claim_slot(database_url, study_id, None)
    assert retry is not None
    assert (retry.fixed_params, retry.retry_of) == (params, 10_001)
    assert row(database_url, study_id).slots_used == 1  # one slot for original + retry
    assert claims.claim_slot(database_url, study_id, None) is None

    # The re-run dies too: max_retries=1 is used up, nothing more is enqueued.
    claims.attach_trial(database_url, retry.record_id, 10_002, 1)
    claims.finish_record(
        database_url, retry.record_id, "fail", error="worker died", retry_params=params
    )
    with session_scope(database_url) as session:
        pending = session.scalars(
            select(EnqueuedConfig).where(
                EnqueuedConfig.study_id == study_id, EnqueuedConfig.claimed.is_(False)
            )
        ).all()
    assert pending == []
    third = claims.claim_slot(database_url, study_id, None)
    assert third is not None and third.fixed_params is None and third.retry_of is None
    claims.finish_record(database_url, third.record_id, "complete")
    study = row(database_url, study_id)
    assert (study.status, study.slots_used, study.n_failed, study.n_running) == (
        "completed",
        1,
        2,
        0,
    )


def test_a_failure_that_is_the_trials_fault_is_not_retried(database_url: str) -> None:
    study_id, _ = new_study(database_url, 2, budget={"n_trials": 2, "max_retries": 3})
    claim = claims.claim_slot(database_url, study_id, None)
    assert claim is not None
    claims.finish_record(database_url, claim.record_id, "fail", error="ValueError: bad")
    nxt = claims.claim_slot(database_url, study_id, None)
    assert nxt is not None and nxt.retry_of is None


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        ({"n_trials": 3, "max_parallel_trials": 0}, "max_parallel_trials"),
        ({"n_trials": 3, "max_retries": -1}, "max_retries"),
    ],
)
def test_bad_scheduling_fields_are_refused(budget: dict[str, int], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        StudySpec.model_validate(tiny_spec("bad", budget=budget))
    with pytest.raises(ValidationError, match="priority"):
        StudySpec.model_validate(tiny_spec("bad", priority=10_000))


def test_gpu_slots() -> None:
    assert plan_slots("all", 2, None, 2) == [
        Slot("cuda", "0"),
        Slot("cuda", "0"),
        Slot("cuda", "1"),
        Slot("cuda", "1"),
    ]
    assert plan_slots("1", 1, None, 2) == [Slot("cuda", "1")]
    assert Slot("cuda", "1").env() == {"CUDA_VISIBLE_DEVICES": "1"}
    # No GPU on the node, or --device cpu: CPU processes.
    assert plan_slots("all", 3, None, 0) == [Slot("cpu")] * 3
    assert plan_slots(None, 2, "cpu", 4) == [Slot("cpu")] * 2
    for bad, reason in (("0,x", "indices"), ("0,0", "twice"), ("3", "no GPU 3")):
        with pytest.raises(ValueError, match=reason):
            parse_gpus(bad, 2)
    with pytest.raises(ValueError, match="trials-per-gpu"):
        plan_slots("all", 0, None, 1)


def grid_spec(n_trials: int, **overrides: object) -> dict[str, object]:
    """A 2 x 3 grid: optimizer x batch_size."""
    return {
        "sampler": {"name": "grid", "seed": 3},
        "space": {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        },
        "budget": {"n_trials": n_trials, "max_failed_trials": 10},
        **overrides,
    }


def test_each_grid_point_is_claimed_once_and_a_used_up_grid_completes(database_url: str) -> None:
    study_id, _ = new_study(database_url, 6, **grid_spec(6))
    got = [claims.claim_slot(database_url, study_id, None) for _ in range(6)]
    points = [tuple(sorted(c.fixed_params.items())) for c in got if c and c.fixed_params]
    assert len(points) == 6 and len(set(points)) == 6  # the whole grid, each point once
    # A point that failed (its own fault) gives its slot back, but no point is left.
    first = got[0]
    assert first is not None
    claims.finish_record(database_url, first.record_id, "fail", error="ValueError: bad")
    assert row(database_url, study_id).slots_used == 5
    assert claims.claim_slot(database_url, study_id, None) is None
    assert row(database_url, study_id).slots_used == 5  # the refused claim took nothing
    for c in got[1:]:
        assert c is not None
        claims.finish_record(database_url, c.record_id, "complete")
    study = row(database_url, study_id)
    assert (study.status, study.n_running, study.n_failed) == ("completed", 0, 1)


def test_a_grid_budget_below_its_size_samples_distinct_points_in_a_seeded_order(
    database_url: str,
) -> None:
    orders = []
    for _ in range(2):
        study_id, _ = new_study(database_url, 3, **grid_spec(3))
        got = [claims.claim_slot(database_url, study_id, None) for _ in range(4)]
        assert got[3] is None  # the budget, not the grid, is the limit here
        orders.append([c.fixed_params for c in got[:3] if c])
    assert orders[0] == orders[1]  # same seed, same points in every process
    assert len({tuple(sorted(p.items())) for p in orders[0]}) == 3


def test_a_released_grid_point_is_claimed_again(database_url: str) -> None:
    study_id, _ = new_study(database_url, 2, **grid_spec(2))
    first = claims.claim_slot(database_url, study_id, None)
    assert first is not None
    assert claims.release_claim(database_url, first.record_id, "its worker died")
    again = claims.claim_slot(database_url, study_id, None)
    other = claims.claim_slot(database_url, study_id, None)
    assert again is not None and other is not None
    assert again.fixed_params == first.fixed_params
    assert other.fixed_params != first.fixed_params


def expire(url: str, study_id: int) -> None:
    with session_scope(url) as session:
        session.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(deadline_at=utcnow() - timedelta(seconds=1))
        )


def stop(url: str, study_id: int) -> None:
    with session_scope(url) as session:
        stop_study(session, study_id)


def fail_past_the_cap(url: str, study_id: int) -> None:
    for _ in range(2):  # max_failed_trials: 1
        claim = claims.claim_slot(url, study_id, None)
        assert claim is not None
        claims.finish_record(url, claim.record_id, "fail", error="ValueError: bad")


def use_the_budget(url: str, study_id: int) -> None:
    for _ in range(3):
        assert claims.claim_slot(url, study_id, None) is not None


def run_the_parallel_cap(url: str, study_id: int) -> None:
    for _ in range(2):  # max_parallel_trials: 2
        assert claims.claim_slot(url, study_id, None) is not None


def use_the_grid(url: str, study_id: int) -> None:
    for _ in range(6):
        claim = claims.claim_slot(url, study_id, None)
        assert claim is not None
        claims.finish_record(url, claim.record_id, "fail", error="ValueError: bad")


LIMITS = {
    "timeout": ({"budget": {"n_trials": 3, "timeout_seconds": 600}}, expire),
    "stop": ({}, stop),
    "failure cap": ({"budget": {"n_trials": 3, "max_failed_trials": 1}}, fail_past_the_cap),
    "budget": ({}, use_the_budget),
    "max_parallel_trials": (
        {"budget": {"n_trials": 3, "max_parallel_trials": 2}},
        run_the_parallel_cap,
    ),
    "grid used up": (grid_spec(3), use_the_grid),
}


@pytest.mark.parametrize("limit", list(LIMITS))
def test_every_study_limit_is_enforced_by_the_claim_itself(database_url: str, limit: str) -> None:
    """No sweep runs here: each limit must stop the very next claim, and a study that can
    take no trial is not offered to workers."""
    overrides, reach = LIMITS[limit]
    study_id, name = new_study(database_url, 3, **overrides)
    assert study_id in claims.candidate_studies(database_url, [name])
    reach(database_url, study_id)
    assert claims.claim_slot(database_url, study_id, None) is None
    assert claims.candidate_studies(database_url, [name]) == []
