"""Budget slots: exact under concurrency, given back on failure, reaped from dead workers."""

from __future__ import annotations

import threading
from datetime import timedelta

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import select, update

from service.core.db.engine import session_scope
from service.core.db.models import Study, TrialRecord, Worker, utcnow
from service.core.optuna_compat import create_running_trial, trial_id_of
from service.core.optuna_storage import get_storage
from service.scheduling import claims, orphans
from service.studies.service import create_study
from service.studies.spec import StudySpec
from tests.conftest import tiny_spec, unique


def new_study(url: str, n_trials: int, **overrides: object) -> int:
    spec = StudySpec.model_validate(tiny_spec(unique("claims"), n_trials, **overrides))
    with session_scope(url) as session:
        return create_study(session, spec).id


def study_row(url: str, study_id: int) -> Study:
    with session_scope(url) as session:
        study = session.get(Study, study_id)
        assert study is not None
        return study


def new_worker(url: str, heartbeat_age_s: float = 0.0) -> int:
    beat = utcnow() - timedelta(seconds=heartbeat_age_s)
    with session_scope(url) as session:
        w = Worker(
            host="test", pid=1, device="cpu", version="t", status="running", heartbeat_at=beat
        )
        session.add(w)
        session.flush()
        return w.id


def running_trial_of_silent_worker(url: str) -> tuple[int, int, claims.Claim, int]:
    """A 1-trial study whose only trial runs on a worker silent for two minutes."""
    study_id = new_study(url, 1)
    worker_id = new_worker(url, heartbeat_age_s=120)
    claim = claims.claim_slot(url, study_id, worker_id)
    assert claim is not None
    optuna_study_id = study_row(url, study_id).optuna_study_id
    optuna_trial_id = get_storage(url).create_new_trial(optuna_study_id)
    claims.attach_trial(url, claim.record_id, optuna_trial_id, 0)
    return study_id, worker_id, claim, optuna_trial_id


def test_claims_stop_at_the_budget(database_url: str) -> None:
    study_id = new_study(database_url, 3)
    got = [claims.claim_slot(database_url, study_id, None) for _ in range(5)]
    assert [c is not None for c in got] == [True, True, True, False, False]
    assert [c.claim_index for c in got if c] == [1, 2, 3]
    assert study_row(database_url, study_id).slots_used == 3


def test_concurrent_claims_never_overshoot(database_url: str) -> None:
    study_id = new_study(database_url, 7)
    results: list[object] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(5):
            c = claims.claim_slot(database_url, study_id, None)
            with lock:
                results.append(c)

    threads = [threading.Thread(target=grab) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [c for c in results if c is not None]
    assert len(won) == 7
    assert sorted(c.claim_index for c in won) == list(range(1, 8))  # type: ignore[attr-defined]


def test_failure_gives_the_slot_back_once(database_url: str) -> None:
    study_id = new_study(database_url, 1)
    claim = claims.claim_slot(database_url, study_id, None)
    assert claim is not None
    assert claims.claim_slot(database_url, study_id, None) is None
    assert claims.finish_record(database_url, claim.record_id, "fail", error="boom") is True
    # A second finish (e.g. the reaper racing the worker) changes nothing.
    assert claims.finish_record(database_url, claim.record_id, "fail", error="again") is False
    row = study_row(database_url, study_id)
    assert (row.slots_used, row.n_failed) == (0, 1)
    assert claims.claim_slot(database_url, study_id, None) is not None


def test_completing_the_budget_completes_the_study(database_url: str) -> None:
    study_id = new_study(database_url, 2)
    a = claims.claim_slot(database_url, study_id, None)
    b = claims.claim_slot(database_url, study_id, None)
    assert a and b
    claims.finish_record(database_url, a.record_id, "complete")
    assert study_row(database_url, study_id).status == "running"
    claims.finish_record(database_url, b.record_id, "pruned")
    row = study_row(database_url, study_id)
    assert row.status == "completed"
    assert row.finished_at is not None


def test_too_many_failures_fail_the_study(database_url: str) -> None:
    study_id = new_study(database_url, 5, budget={"n_trials": 5, "max_failed_trials": 1})
    for i in range(2):
        c = claims.claim_slot(database_url, study_id, None)
        assert c is not None
        claims.finish_record(database_url, c.record_id, "fail", error=f"error {i}")
    row = study_row(database_url, study_id)
    assert row.status == "failed"
    assert row.error is not None and "error 1" in row.error
    assert claims.claim_slot(database_url, study_id, None) is None


def test_enqueued_configs_are_claimed_in_order_once(database_url: str) -> None:
    study_id = new_study(database_url, 4, enqueue=[{"lr": 0.01}, {"lr": 0.02, "batch_size": 32}])
    fixed = [claims.claim_slot(database_url, study_id, None) for _ in range(4)]
    assert [c.fixed_params if c else "none" for c in fixed] == [
        {"lr": 0.01},
        {"lr": 0.02, "batch_size": 32},
        None,
        None,
    ]


def test_dead_worker_trial_is_failed_and_its_slot_returned(database_url: str) -> None:
    study_id, worker_id, claim, optuna_trial_id = running_trial_of_silent_worker(database_url)
    storage = get_storage(database_url)

    assert claims.reap_dead_workers(database_url, grace_seconds=60) >= 1

    assert storage.get_trial(optuna_trial_id).state == TrialState.FAIL
    with session_scope(database_url) as session:
        record = session.get(TrialRecord, claim.record_id)
        worker = session.get(Worker, worker_id)
        assert record is not None and worker is not None
        assert record.state == "fail"
        assert record.error is not None and "heartbeat" in record.error
        assert worker.status == "dead"
    assert study_row(database_url, study_id).slots_used == 0


def test_reaper_keeps_a_trial_that_finished_in_optuna(database_url: str) -> None:
    """The worker told Optuna, then died before recording it: the slot stays used."""
    study_id, worker_id, claim, optuna_trial_id = running_trial_of_silent_worker(database_url)
    storage = get_storage(database_url)
    storage.set_trial_state_values(optuna_trial_id, TrialState.COMPLETE, [0.5])

    claims.reap_worker(database_url, worker_id, "gone")

    with session_scope(database_url) as session:
        record = session.get(TrialRecord, claim.record_id)
        assert record is not None and record.state == "complete"
    row = study_row(database_url, study_id)
    assert (row.slots_used, row.status) == (1, "completed")


def test_live_workers_are_not_reaped(database_url: str) -> None:
    worker_id = new_worker(database_url, heartbeat_age_s=0)
    claims.reap_dead_workers(database_url, grace_seconds=60)
    with session_scope(database_url) as session:
        assert session.scalar(select(Worker.status).where(Worker.id == worker_id)) == "running"


def test_deadline_completes_the_study(database_url: str) -> None:
    study_id = new_study(database_url, 5, budget={"n_trials": 5, "timeout_seconds": 60})
    with session_scope(database_url) as session:
        session.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(deadline_at=utcnow() - timedelta(seconds=1))
        )
    claims.expire_deadlines(database_url)
    assert study_row(database_url, study_id).status == "completed"
    assert claims.claim_slot(database_url, study_id, None) is None


@pytest.mark.parametrize("n_trials", [1, 4])
def test_candidates_only_list_studies_with_budget(database_url: str, n_trials: int) -> None:
    study_id = new_study(database_url, n_trials)
    assert study_id in claims.candidate_studies(database_url)
    for _ in range(n_trials):
        assert claims.claim_slot(database_url, study_id, None) is not None
    assert study_id not in claims.candidate_studies(database_url)


def test_a_claim_reaped_before_its_trial_was_attached_is_not_trained(database_url: str) -> None:
    """The worker was declared dead between claiming and creating its Optuna trial: the
    slot went back, so attaching must tell the worker not to train (else n_trials + 1)."""
    study_id = new_study(database_url, 1)
    worker_id = new_worker(database_url, heartbeat_age_s=120)
    claim = claims.claim_slot(database_url, study_id, worker_id)
    assert claim is not None
    claims.reap_worker(database_url, worker_id, "silent")
    assert study_row(database_url, study_id).slots_used == 0
    assert claims.attach_trial(database_url, claim.record_id, 987_654, 0) is False

    # Attached in time: the reaper's "no Optuna trial yet" release does not apply any more.
    other = claims.claim_slot(database_url, study_id, worker_id)
    assert other is not None
    assert claims.attach_trial(database_url, other.record_id, 987_655, 1) is True
    assert not claims.release_claim(database_url, other.record_id, "silent")


def optuna_study(url: str, study_id: int) -> optuna.Study:
    row = study_row(url, study_id)
    return optuna.load_study(study_name=f"hpo:{row.name}", storage=get_storage(url))


def test_a_released_claim_gives_back_its_slot_and_configuration(database_url: str) -> None:
    """Its worker died before creating the Optuna trial: nothing ran, nothing is counted."""
    study_id = new_study(database_url, 1, enqueue=[{"lr": 0.01}])
    worker_id = new_worker(database_url, heartbeat_age_s=120)
    claim = claims.claim_slot(database_url, study_id, worker_id)
    assert claim is not None and claim.fixed_params == {"lr": 0.01}

    claims.reap_worker(database_url, worker_id, "silent")

    row = study_row(database_url, study_id)
    assert (row.slots_used, row.n_running, row.n_failed, row.status) == (0, 0, 0, "running")
    again = claims.claim_slot(database_url, study_id, None)
    assert again is not None and again.fixed_params == {"lr": 0.01}  # back in the queue


def test_the_reaper_finds_a_trial_created_but_not_attached(database_url: str) -> None:
    """The worker died between creating its Optuna trial and linking it to its claim: the
    claim's tag on the trial leads the reaper to it; it is failed, counted and re-run."""
    study_id = new_study(database_url, 1, enqueue=[{"lr": 0.01}])
    worker_id = new_worker(database_url, heartbeat_age_s=120)
    claim = claims.claim_slot(database_url, study_id, worker_id)
    assert claim is not None
    study = optuna_study(database_url, study_id)
    trial = create_running_trial(study, claim.record_id, {"lr": 0.01})

    claims.reap_worker(database_url, worker_id, "silent")

    storage = get_storage(database_url)
    assert storage.get_trial(trial_id_of(trial)).state == TrialState.FAIL
    with session_scope(database_url) as session:
        record = session.get(TrialRecord, claim.record_id)
        assert record is not None
        assert (record.optuna_trial_id, record.state) == (trial_id_of(trial), "fail")
    row = study_row(database_url, study_id)
    assert (row.slots_used, row.n_running, row.n_failed) == (0, 0, 1)
    rerun = claims.claim_slot(database_url, study_id, None)
    assert rerun is not None
    assert (rerun.fixed_params, rerun.retry_of) == ({"lr": 0.01}, trial_id_of(trial))


def test_the_sweep_closes_running_trials_no_claim_owns(database_url: str) -> None:
    study_id = new_study(database_url, 3)
    study = optuna_study(database_url, study_id)
    storage = get_storage(database_url)
    # 1. Tagged with a claim that was released while its worker lived on (and then died).
    worker_id = new_worker(database_url, heartbeat_age_s=120)
    released = claims.claim_slot(database_url, study_id, worker_id)
    assert released is not None
    claims.reap_worker(database_url, worker_id, "silent")
    late = create_running_trial(study, released.record_id)
    # 2. Untagged (an older version's `ask`), no claim: failed once older than the grace.
    untagged = study.ask()
    # 3. A live claim's trial, attached or not yet: left alone.
    live = claims.claim_slot(database_url, study_id, None)
    assert live is not None
    live_trial = create_running_trial(study, live.record_id)

    # (The database is shared with other tests: the counts returned may include theirs.)
    assert orphans.close_orphan_trials(database_url, grace_seconds=3600) >= 1
    assert storage.get_trial(trial_id_of(late)).state == TrialState.FAIL
    assert storage.get_trial(trial_id_of(untagged)).state == TrialState.RUNNING  # too young
    assert orphans.close_orphan_trials(database_url, grace_seconds=0) >= 1
    assert storage.get_trial(trial_id_of(untagged)).state == TrialState.FAIL
    assert storage.get_trial(trial_id_of(live_trial)).state == TrialState.RUNNING

    row = study_row(database_url, study_id)
    assert (row.n_failed, row.n_running, row.slots_used) == (2, 1, 1)  # counts agree
    with session_scope(database_url) as session:
        record = session.get(TrialRecord, released.record_id)
        assert record is not None and record.optuna_trial_id == trial_id_of(late)
