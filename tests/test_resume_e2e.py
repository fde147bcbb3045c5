"""A re-run resumes from its trial's checkpoint (issue 16 §6), with real worker processes on
SQLite and PostgreSQL.

A real worker trains a 20-epoch trial that saves its state every epoch and SIGKILLs itself
once epoch 15 is written and reported (`HPO_FAULT_AT=epoch:15`: the checkpoint of epoch 14
is the last). A fresh worker reaps it and runs the re-run, which must resume at epoch 15:
6 epochs trained, each of the 20 epochs in its curves and in Optuna's intermediate values
exactly once, and its curves, value and weights equal to an uninterrupted trial's with the
same seed and parameters (trained in the same fresh worker; tolerance 0: CPU training is
deterministic and the database stores doubles). No checkpoint is left afterwards.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from typing import Any

import pytest
import torch
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import (
    CHECKPOINT_KIND,
    Artifact,
    CurvePoint,
    TrialRecord,
    Worker,
    utcnow,
)
from service.core.optuna_storage import get_storage
from service.studies.service import create_study
from service.studies.spec import StudySpec
from service.trials.schemas import TrialDetail
from service.trials.service import get_trial
from tests.conftest import tiny_spec, unique
from tests.study_checks import check_quiet_study, start_worker, worker_settings
from trainer.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # real worker processes

EPOCHS, KILLED_AT, GRACE_S = 20, 15, 1.0
PARAMS = {"lr": 0.05, "batch_size": 16}


def new_study(url: str, prefix: str) -> tuple[int, str]:
    name = unique(prefix)
    raw: dict[str, Any] = tiny_spec(name, 1, enqueue=[PARAMS])
    raw["objective"] = {"metric": "val_accuracy", "max_epochs": EPOCHS}
    # State a naive resume would lose: Adam's moments, a step schedule, dropout's generator.
    raw["fixed"] |= {"optimizer": "adam", "dropout": 0.2, "lr_schedule": "step"}
    raw["budget"] = {"n_trials": 1, "max_retries": 1}
    raw["checkpoint"] = {"every_epochs": 1}
    with session_scope(url) as session:
        return create_study(session, StudySpec.model_validate(raw)).id, name


def records(url: str, study_id: int) -> list[TrialRecord]:
    with session_scope(url) as session:
        rows = session.scalars(
            select(TrialRecord).where(TrialRecord.study_id == study_id).order_by(TrialRecord.id)
        ).all()
        session.expunge_all()
        return list(rows)


def checkpoints(url: str, trial_ids: list[int]) -> dict[int, dict[str, Any]]:
    with session_scope(url) as session:
        rows = session.execute(
            select(Artifact.trial_id, Artifact.meta).where(
                Artifact.trial_id.in_(trial_ids), Artifact.kind == CHECKPOINT_KIND
            )
        ).all()
    return {trial_id: dict(meta) for trial_id, meta in rows}


def detail(url: str, trial_id: int) -> TrialDetail:
    with session_scope(url) as session:
        return get_trial(session, trial_id)  # what GET /api/trials/{id} answers


def weights(url: str, trial_id: int) -> dict[str, torch.Tensor]:
    with session_scope(url) as session:
        blob = session.scalar(
            select(Artifact.data).where(Artifact.trial_id == trial_id, Artifact.kind == "model")
        )
    assert blob is not None
    return load_checkpoint(bytes(blob)).state_dict


def wait_silent(url: str, worker_id: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with session_scope(url) as session:
            beat = session.scalar(select(Worker.heartbeat_at).where(Worker.id == worker_id))
        if beat is not None and beat < utcnow() - timedelta(seconds=GRACE_S):
            return
        time.sleep(0.05)
    raise AssertionError("the killed worker's heartbeat did not age past the grace period")


def test_a_rerun_resumes_from_the_checkpoint_and_equals_an_uninterrupted_run(
    database_url: str,
) -> None:
    victim_study, victim_name = new_study(database_url, "resume-killed")
    reference_study, reference_name = new_study(database_url, "resume-straight")

    victim = start_worker(
        worker_settings(database_url, grace_seconds=600), [victim_name], f"epoch:{KILLED_AT}"
    )
    victim.join(timeout=600)
    assert victim.exitcode == -signal.SIGKILL
    (killed,) = records(database_url, victim_study)
    assert killed.optuna_trial_id is not None and killed.worker_id is not None
    # Killed after epoch 15 was written: its last saved state is epoch 14's.
    assert checkpoints(database_url, [killed.optuna_trial_id]) == {
        killed.optuna_trial_id: {"epoch": KILLED_AT - 1}
    }
    killed_curves = detail(database_url, killed.optuna_trial_id).curves
    assert [s for s, _ in killed_curves["val_loss"]] == list(range(1, KILLED_AT + 1))

    wait_silent(database_url, killed.worker_id)
    fresh = start_worker(worker_settings(database_url, GRACE_S), [victim_name, reference_name])
    fresh.join(timeout=600)
    assert fresh.exitcode == 0

    picture = check_quiet_study(database_url, victim_study)
    assert picture.status == "completed"
    assert [t.state.name for t in picture.trials] == ["FAIL", "COMPLETE"]
    failed, rerun = records(database_url, victim_study)
    assert failed.id == killed.id and rerun.retry_of == killed.optuna_trial_id
    assert rerun.optuna_trial_id is not None and rerun.state == "complete"
    # It trained epochs 15..20 only: 6 epochs.
    shown = detail(database_url, rerun.optuna_trial_id)
    assert shown.resumed_from_epoch == rerun.resumed_from_epoch == KILLED_AT - 1
    assert EPOCHS - rerun.resumed_from_epoch <= 6

    # Every epoch once, in its curves and in what Optuna was told.
    resumed = shown.curves
    for metric, points in resumed.items():
        assert [s for s, _ in points] == list(range(1, EPOCHS + 1)), metric
    assert sorted(shown.intermediate_values) == list(range(1, EPOCHS + 1))
    optuna_rerun = picture.trials[1]
    assert sorted(optuna_rerun.intermediate_values) == list(range(1, EPOCHS + 1))
    # The epochs before the checkpoint were copied in one statement before training went
    # on (and had training started over, their second insert would have failed the trial).
    with session_scope(database_url) as session:
        ids = session.execute(
            select(CurvePoint.step, CurvePoint.id).where(
                CurvePoint.trial_id == rerun.optuna_trial_id
            )
        ).all()
    copied = [i for step, i in ids if step <= KILLED_AT - 1]
    trained = [i for step, i in ids if step >= KILLED_AT]
    assert max(copied) < min(trained)

    # The same as an uninterrupted trial with the same seed (trial number 0) and params.
    (straight,) = records(database_url, reference_study)
    assert straight.optuna_trial_id is not None and straight.resumed_from_epoch is None
    reference = detail(database_url, straight.optuna_trial_id).curves
    assert resumed.keys() == reference.keys()
    for metric in resumed:
        if metric != "epoch_seconds":
            assert resumed[metric] == reference[metric], metric
    reference_trial = get_storage(database_url).get_trial(straight.optuna_trial_id)
    assert optuna_rerun.params == reference_trial.params
    assert optuna_rerun.intermediate_values == reference_trial.intermediate_values
    assert optuna_rerun.value == reference_trial.value
    a, b = (
        weights(database_url, rerun.optuna_trial_id),
        weights(database_url, straight.optuna_trial_id),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # No checkpoint is left: the re-run's ended with it, the failed trial's moved to it.
    all_trials = [killed.optuna_trial_id, rerun.optuna_trial_id, straight.optuna_trial_id]
    assert checkpoints(database_url, all_trials) == {}
