"""Claiming a pack (issue 14 §2, §5): up to `fuse.max_trials` slots in one transaction, with
the budget, `max_parallel_trials` (every member counts), a grid and the device-hour budget
exact; the spec's `fuse` and `budget.device_hours` bounds."""

from __future__ import annotations

import threading
from typing import Any

import optuna
import pytest
from pydantic import ValidationError

from service.core.db.engine import session_scope
from service.core.db.models import Study, TrialRecord
from service.scheduling import claims
from service.studies.search.factories import build_sampler
from service.studies.service import create_study
from service.studies.spec import StudySpec
from tests.conftest import tiny_spec, unique


def new_study(url: str, n_trials: int, **overrides: Any) -> int:
    spec = StudySpec.model_validate(tiny_spec(unique("pack"), n_trials, **overrides))
    with session_scope(url) as session:
        return create_study(session, spec).id


def row(url: str, study_id: int) -> Study:
    with session_scope(url) as session:
        study = session.get(Study, study_id)
        assert study is not None
        session.expunge(study)
        return study


def test_a_pack_takes_up_to_k_slots_and_never_more_than_the_budget(database_url: str) -> None:
    study_id = new_study(database_url, 6, fuse={"max_trials": 4})
    first = claims.claim_pack(database_url, study_id, None)
    second = claims.claim_pack(database_url, study_id, None)
    assert [len(first), len(second)] == [4, 2]
    assert claims.claim_pack(database_url, study_id, None) == []
    assert sorted(c.claim_index for c in first + second) == [1, 2, 3, 4, 5, 6]
    study = row(database_url, study_id)
    assert (study.slots_used, study.n_running, study.n_claims) == (6, 6, 6)


def test_max_parallel_trials_counts_every_member(database_url: str) -> None:
    study_id = new_study(
        database_url, 10, fuse={"max_trials": 8}, budget={"n_trials": 10, "max_parallel_trials": 3}
    )
    pack = claims.claim_pack(database_url, study_id, None)
    assert len(pack) == 3 and claims.claim_pack(database_url, study_id, None) == []
    claims.finish_record(database_url, pack[0].record_id, claims.TrialState.COMPLETE)
    assert len(claims.claim_pack(database_url, study_id, None)) == 1


def test_concurrent_packs_never_overshoot(database_url: str) -> None:
    study_id = new_study(database_url, 7, fuse={"max_trials": 3})
    got: list[claims.Claim] = []
    lock = threading.Lock()

    def take() -> None:
        while pack := claims.claim_pack(database_url, study_id, None):
            with lock:
                got.extend(pack)

    threads = [threading.Thread(target=take) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.claim_index for c in got) == list(range(1, 8))


def test_a_pack_of_a_grid_stops_at_its_last_point(database_url: str) -> None:
    grid = {"batch_size": {"type": "categorical", "choices": [16, 32, 64]}}
    study_id = new_study(
        database_url, 10, fuse={"max_trials": 8}, space=grid, sampler={"name": "grid"}
    )
    pack = claims.claim_pack(database_url, study_id, None)
    assert sorted(c.fixed_params["batch_size"] for c in pack if c.fixed_params) == [16, 32, 64]
    assert len(pack) == 3
    study = row(database_url, study_id)
    assert (study.slots_used, study.n_running, study.n_claims) == (3, 3, 3)


def test_the_device_hour_budget_stops_claims_and_ends_the_study(database_url: str) -> None:
    budget = {"n_trials": 10, "device_hours": 1.0}
    study_id = new_study(database_url, 10, fuse={"max_trials": 2}, budget=budget)
    assert row(database_url, study_id).device_seconds_limit == 3600.0
    pack = claims.claim_pack(database_url, study_id, None)
    assert len(pack) == 2
    # The first member used 3000 s, the second 600 s: 3600 s reach the budget.
    done = claims.TrialState.COMPLETE
    claims.finish_record(database_url, pack[0].record_id, done, device_seconds=3000.0)
    (third,) = claims.claim_pack(database_url, study_id, None, max_trials=1)  # 3000 < 3600
    claims.finish_record(database_url, pack[1].record_id, done, device_seconds=600.0)
    assert claims.claim_pack(database_url, study_id, None) == []
    assert study_id not in claims.candidate_studies(database_url)
    study = row(database_url, study_id)
    assert study.device_seconds == pytest.approx(3600.0)
    assert study.status == "running"  # the third trial still runs: it finishes
    claims.finish_record(database_url, third.record_id, done, device_seconds=1.0)
    study = row(database_url, study_id)
    assert study.status == "completed" and study.device_seconds == pytest.approx(3601.0)
    with session_scope(database_url) as session:
        record = session.get(TrialRecord, third.record_id)
        assert record is not None and record.device_seconds == 1.0


def test_tpe_asks_with_a_constant_liar_only_when_fused() -> None:
    plain = StudySpec.model_validate(tiny_spec("t", sampler={"name": "tpe", "seed": 1}))
    fused = plain.model_copy(update={"fuse": plain.fuse.model_copy(update={"max_trials": 4})})
    for spec, liar in ((plain, False), (fused, True)):
        sampler = build_sampler(spec, 1)
        assert isinstance(sampler, optuna.samplers.TPESampler)
        assert sampler._constant_liar is liar


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (("fuse", "max_trials"), 0),
        (("fuse", "max_trials"), 257),
        (("budget", "device_hours"), 0.0),
        (("budget", "device_hours"), -1.0),
        (("budget", "device_hours"), 1e7),
    ],
)
def test_fuse_and_device_hours_are_bounded(field: tuple[str, str], value: float) -> None:
    raw = tiny_spec("bounds")
    raw.setdefault(field[0], {})[field[1]] = value
    with pytest.raises(ValidationError) as e:
        StudySpec.model_validate(raw)
    assert [err["loc"] for err in e.value.errors()] == [field]


def test_fuse_defaults_off() -> None:
    spec = StudySpec.model_validate(tiny_spec("default"))
    assert spec.fuse.max_trials == 1 and spec.budget.device_hours is None
