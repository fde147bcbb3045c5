"""Fused studies with real worker processes (issue 14, "Done when"): a study with `fuse`
through REST (exact budget, per-trial curves, diagnosis, saved models, a pruned member, a
diverging member failing alone), a worker killed with SIGKILL in the middle of a pack (every
member failed by the heartbeat reaper and re-run), and the device-hour budget stopping new
claims."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.cli.studies import device_line
from service.core.db.engine import session_scope
from service.core.db.models import TrialDiagnosis, TrialRecord, Worker, utcnow
from service.studies.service import create_study, get_study
from service.studies.spec import StudySpec
from tests.conftest import tiny_spec, unique
from tests.study_checks import check_quiet_study, run_workers, start_worker, worker_settings
from trainer.checkpoint import load_checkpoint, rebuild_model

pytestmark = pytest.mark.slow  # real worker processes

DIVERGING_LR = 10.0  # plain SGD, leaky ReLU, 2 layers: the loss is nan in the first epoch


def fused_spec(name: str) -> dict[str, Any]:
    """A 2 x 4 grid in packs of 4: batch size 16 and 32 (two structures), one learning rate
    that diverges; a percentile pruner that prunes the second pack's weaker members."""
    spec = tiny_spec(name, 8)
    spec["dataset"] = {"name": "moons", "n_samples": 400, "noise": 0.2}
    spec["objective"] = {"metric": "val_accuracy", "max_epochs": 3}
    spec["space"] = {
        "lr": {"type": "categorical", "choices": [0.003, 0.03, 0.3, DIVERGING_LR]},
        "batch_size": {"type": "categorical", "choices": [16, 32]},
    }
    spec["fixed"] = {
        "hidden_layers": 2,
        "hidden_units": 16,
        "optimizer": "sgd",
        "activation": "leaky_relu",
    }
    spec["sampler"] = {"name": "grid", "seed": 3}
    spec["pruner"] = {"name": "percentile", "percentile": 75.0, "n_startup_trials": 1}
    spec["fuse"] = {"max_trials": 4}
    return spec


def test_a_fused_study_through_rest(client: httpx.Client, database_url: str) -> None:
    response = client.post("/api/studies", json=fused_spec(unique("fused")))
    assert response.status_code == 201, response.text
    study_id = int(response.json()["id"])

    run_workers(worker_settings(database_url), [str(study_id)], n=1)

    picture = check_quiet_study(database_url, study_id)
    assert picture.status == "completed"  # the grid is used up
    assert len(picture.trials) == 8  # each grid point once; the two failures not re-run
    failed = [t for t in picture.trials if t.state.name == "FAIL"]
    assert sorted(t.params["batch_size"] for t in failed) == [16, 32]
    assert {t.params["lr"] for t in failed} == {DIVERGING_LR}
    study = client.get(f"/api/studies/{study_id}").json()
    assert study["counts"]["fail"] == 2 and study["counts"]["running"] == 0
    trials = [client.get(f"/api/trials/{t._trial_id}").json() for t in picture.trials]
    by_state: dict[str, list[dict[str, Any]]] = {}
    for trial in trials:
        by_state.setdefault(trial["state"], []).append(trial)
    assert len(by_state.get("pruned", [])) >= 1, [t["state"] for t in trials]
    assert len(by_state["complete"]) + len(by_state.get("pruned", [])) == 6
    for trial in by_state["fail"]:
        assert "diverged" in trial["error"], trial["error"]
    for trial in by_state["complete"]:  # their own curves, every epoch
        assert [step for step, _ in trial["curves"]["val_accuracy"]] == [1, 2, 3]
        assert trial["value"] == trial["curves"]["val_accuracy"][-1][1]
    for trial in by_state.get("pruned", []):  # stopped early, alone
        assert 1 <= len(trial["curves"]["val_accuracy"]) < 3
    for trial in by_state["complete"] + by_state.get("pruned", []):
        got = client.get(f"/api/trials/{trial['trial_id']}/model")
        assert got.status_code == 200, got.text
        ckpt = load_checkpoint(got.content)
        assert ckpt.config.lr == trial["params"]["lr"]
        assert ckpt.config.batch_size == trial["params"]["batch_size"]
        rebuild_model(ckpt)  # an ordinary model of its family
    # Device time: every trial has its share; the study's is their sum.
    assert all(t["device_seconds"] is not None and t["device_seconds"] > 0 for t in trials)
    # A fused group's members share its wall time evenly: equal shares. Each pack of 4 has
    # at least two members of one batch size (two structures), so some trained fused.
    assert len({t["device_seconds"] for t in trials}) < len(trials)
    total = sum(t["device_seconds"] for t in trials)
    assert study["device_seconds"] == pytest.approx(total)
    assert study["device_seconds_limit"] is None
    with session_scope(database_url) as session:
        diagnosed = set(
            session.scalars(
                select(TrialDiagnosis.trial_id).where(
                    TrialDiagnosis.trial_id.in_([t["trial_id"] for t in trials])
                )
            ).all()
        )
    assert diagnosed == {t["trial_id"] for t in trials}  # recorded by the worker


def wait_for_silence(url: str, worker_ids: list[int], grace_s: float) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cutoff = utcnow() - timedelta(seconds=grace_s)
        with session_scope(url) as session:
            beats = session.scalars(
                select(Worker.heartbeat_at).where(Worker.id.in_(worker_ids))
            ).all()
        if all(beat < cutoff for beat in beats):
            return
        time.sleep(0.05)
    raise AssertionError("the killed worker's heartbeat did not age")


def submit(url: str, raw: dict[str, Any]) -> int:
    with session_scope(url) as session:
        return create_study(session, StudySpec.model_validate(raw)).id


ENQUEUED = [
    {"lr": 0.011, "batch_size": 16},
    {"lr": 0.022, "batch_size": 16},
    {"lr": 0.033, "batch_size": 16},
]


def test_a_worker_killed_mid_pack_loses_nothing(database_url: str) -> None:
    """Killed at the first epoch report of a pack of 3: every member is failed by the
    reaper and re-run once with its parameters; the budget holds exactly."""
    name = unique("kill-pack")
    raw = tiny_spec(name, 3, enqueue=ENQUEUED, fuse={"max_trials": 3})
    raw["budget"] = {"n_trials": 3, "max_retries": 1}
    study_id = submit(database_url, raw)
    victim = start_worker(worker_settings(database_url, 600), [name], fault="mid_train")
    victim.join(timeout=600)
    assert victim.exitcode == -signal.SIGKILL
    with session_scope(database_url) as session:
        killed = session.scalars(select(TrialRecord).where(TrialRecord.study_id == study_id)).all()
        assert len(killed) == 3 and all(r.optuna_trial_id is not None for r in killed)
        worker_ids = list({r.worker_id for r in killed if r.worker_id is not None})
        victims = {r.optuna_trial_id for r in killed}
    wait_for_silence(database_url, worker_ids, 1.0)
    run_workers(worker_settings(database_url, 1.0), [name], n=1)

    picture = check_quiet_study(database_url, study_id)
    assert picture.status == "completed"
    assert len(picture.finished()) == 3 and picture.counts["fail"] == 3
    for config in ENQUEUED:
        assert picture.runs_of(config) == 1
    failed = {r.optuna_trial_id for r in picture.records if r.state == "fail"}
    assert failed == victims
    reruns = [r for r in picture.records if r.retry_of is not None]
    assert sorted(r.retry_of for r in reruns) == sorted(victims)  # type: ignore[type-var]
    assert all(r.state == "complete" for r in reruns)
    with session_scope(database_url) as session:
        assert all(session.get(Worker, w).status == "dead" for w in worker_ids)  # type: ignore[union-attr]


def test_the_device_hour_budget_stops_new_claims(database_url: str) -> None:
    """A budget of a few microseconds: the first pack runs (running ones finish), nothing
    after it starts, and the study ends completed with fewer trials than its n_trials."""
    name = unique("device-hours")
    raw = tiny_spec(name, 6, fuse={"max_trials": 2})
    raw["budget"] = {"n_trials": 6, "device_hours": 1e-9}
    study_id = submit(database_url, raw)
    run_workers(worker_settings(database_url), [name], n=1)

    picture = check_quiet_study(database_url, study_id)
    assert picture.status == "completed"
    assert len(picture.trials) == 2  # the first pack only
    with session_scope(database_url) as session:
        detail = get_study(session, study_id).model_dump(mode="json")
    assert detail["device_seconds"] > detail["device_seconds_limit"] == pytest.approx(3.6e-6)
    assert device_line(detail).startswith("device hours used ")
    assert "/ limit 1e-09" in device_line(detail)
