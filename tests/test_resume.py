"""The checkpoint's life in the database (issue 16 §6), on SQLite and PostgreSQL, without
worker processes (tests/test_resume_e2e.py runs them): saved and replaced while the trial
runs, adopted once by its re-run, refused when it cannot be resumed, and deleted when its
trial ends without a re-run."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, select

from service.core.db.engine import session_scope
from service.core.db.models import CHECKPOINT_KIND, Artifact, CurvePoint, TrialRecord
from service.core.states import TrialState
from service.scheduling import claims
from service.studies.service import create_study
from service.studies.spec import StudySpec
from service.worker.resume import adopt_state, save_state
from tests.conftest import tiny_spec, unique
from trainer import TensorData, TrainConfig, fit, load_dataset
from trainer.state import Checkpointer, TrainingState

CONFIG = TrainConfig(hidden_layers=1, hidden_units=8, max_epochs=3, batch_size=32)
METRIC = "val_accuracy"


@pytest.fixture(scope="module")
def states() -> list[TrainingState]:
    """The states after epochs 1, 2 and 3 of a tiny run."""
    saved: list[TrainingState] = []
    data = TensorData.from_splits(load_dataset("moons", n_samples=120, seed=0), "cpu")
    fit(CONFIG, data, checkpoint=Checkpointer(saved.append, every_epochs=1))
    return saved


def running_trial(url: str, max_retries: int = 1) -> tuple[int, int]:
    """A claimed and attached trial of a new study: (record id, Optuna trial id)."""
    raw = tiny_spec(unique("resume"), 3, budget={"n_trials": 3, "max_retries": max_retries})
    with session_scope(url) as session:
        study_id = create_study(session, StudySpec.model_validate(raw)).id
    claim = claims.claim_slot(url, study_id, None)
    assert claim is not None
    trial_id = 1_000_000 + uuid.uuid4().int % 1_000_000_000  # no Optuna trial is needed
    assert claims.attach_trial(url, claim.record_id, trial_id, 0)
    return claim.record_id, trial_id


def write_curves(url: str, trial_id: int, epochs: int) -> None:
    rows = [
        {"trial_id": trial_id, "step": e, "metric": m, "value": e + (0.5 if m == METRIC else 0)}
        for e in range(1, epochs + 1)
        for m in (METRIC, "val_loss")
    ]
    with session_scope(url) as session:
        session.execute(insert(CurvePoint), rows)


def saved_epochs(url: str, trial_ids: list[int]) -> dict[int, Any]:
    with session_scope(url) as session:
        rows = session.execute(
            select(Artifact.trial_id, Artifact.meta).where(
                Artifact.trial_id.in_(trial_ids), Artifact.kind == CHECKPOINT_KIND
            )
        ).all()
    return {trial_id: meta["epoch"] for trial_id, meta in rows}


def curve_steps(url: str, trial_id: int) -> list[tuple[int, str]]:
    with session_scope(url) as session:
        rows = session.execute(
            select(CurvePoint.step, CurvePoint.metric)
            .where(CurvePoint.trial_id == trial_id)
            .order_by(CurvePoint.step, CurvePoint.metric)
        ).all()
    return [(step, metric) for step, metric in rows]


def test_each_save_replaces_the_last_and_a_finished_trial_saves_nothing(
    database_url: str, states: list[TrainingState]
) -> None:
    record_id, trial_id = running_trial(database_url)
    save_state(database_url, trial_id, states[0])
    save_state(database_url, trial_id, states[1])
    assert saved_epochs(database_url, [trial_id]) == {trial_id: 2}
    # Declared dead meanwhile (its re-run may own the state): a late save is dropped, and
    # the failure that enqueued the re-run kept the checkpoint for it.
    claims.finish_record(database_url, record_id, TrialState.FAIL, retry_params={"lr": 0.01})
    save_state(database_url, trial_id, states[2])
    assert saved_epochs(database_url, [trial_id]) == {trial_id: 2}


def test_a_rerun_adopts_the_state_once(database_url: str, states: list[TrainingState]) -> None:
    _, old_trial = running_trial(database_url)
    write_curves(database_url, old_trial, 3)  # epoch 3 was written, its state not saved
    save_state(database_url, old_trial, states[1])
    new_record, new_trial = running_trial(database_url)
    config = dataclasses.asdict(CONFIG)
    adopted = adopt_state(database_url, old_trial, new_trial, new_record, config, METRIC)
    assert adopted is not None
    state, history = adopted
    assert state.epoch == 2
    assert history == {1: {METRIC: 1.5, "val_loss": 1.0}, 2: {METRIC: 2.5, "val_loss": 2.0}}
    assert saved_epochs(database_url, [old_trial, new_trial]) == {new_trial: 2}
    assert curve_steps(database_url, new_trial) == [
        (1, METRIC),
        (1, "val_loss"),
        (2, METRIC),
        (2, "val_loss"),
    ]
    assert len(curve_steps(database_url, old_trial)) == 6  # the failed trial keeps its own
    # Adopting again (a retry after the reply was lost) finds it done and copies nothing.
    again = adopt_state(database_url, old_trial, new_trial, new_record, config, METRIC)
    assert again is not None and again[0].epoch == 2 and again[1] == history
    assert len(curve_steps(database_url, new_trial)) == 4
    with session_scope(database_url) as session:
        record = session.get(TrialRecord, new_record)
        assert record is not None and record.resumed_from_epoch == 2


def test_a_state_of_another_configuration_is_dropped(
    database_url: str, states: list[TrainingState]
) -> None:
    _, old_trial = running_trial(database_url)
    write_curves(database_url, old_trial, 2)
    save_state(database_url, old_trial, states[1])
    new_record, new_trial = running_trial(database_url)
    halved = dataclasses.asdict(dataclasses.replace(CONFIG, batch_size=16))  # e.g. after OOM
    assert adopt_state(database_url, old_trial, new_trial, new_record, halved, METRIC) is None
    assert saved_epochs(database_url, [old_trial, new_trial]) == {}
    assert curve_steps(database_url, new_trial) == []


def test_a_state_whose_curves_miss_an_epoch_is_dropped(
    database_url: str, states: list[TrainingState]
) -> None:
    _, old_trial = running_trial(database_url)
    write_curves(database_url, old_trial, 1)
    save_state(database_url, old_trial, states[1])  # epoch 2, but only epoch 1's curves
    new_record, new_trial = running_trial(database_url)
    config = dataclasses.asdict(CONFIG)
    assert adopt_state(database_url, old_trial, new_trial, new_record, config, METRIC) is None
    assert saved_epochs(database_url, [old_trial, new_trial]) == {}
    assert curve_steps(database_url, new_trial) == []


@pytest.mark.parametrize(
    ("state", "retry", "max_retries", "kept"),
    [
        (TrialState.COMPLETE, False, 1, False),
        (TrialState.PRUNED, False, 1, False),
        (TrialState.FAIL, False, 1, False),  # its own error: no re-run
        (TrialState.FAIL, True, 1, True),  # its worker died: a re-run resumes from it
        (TrialState.FAIL, True, 0, False),  # no re-run left
    ],
)
def test_a_trial_that_ends_without_a_rerun_loses_its_checkpoint(
    database_url: str,
    states: list[TrainingState],
    state: TrialState,
    retry: bool,
    max_retries: int,
    kept: bool,
) -> None:
    record_id, trial_id = running_trial(database_url, max_retries)
    save_state(database_url, trial_id, states[0])
    params = {"lr": 0.01} if retry else None
    assert claims.finish_record(database_url, record_id, state, retry_params=params)
    assert saved_epochs(database_url, [trial_id]) == ({trial_id: 1} if kept else {})
