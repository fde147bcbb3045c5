"""A run resumed from a saved training state continues exactly (issue 16 §6).

Six epochs straight against three, a save, a scrambled process (every global generator
re-seeded, as a fresh process would be) and three more from the saved bytes: the curves and
the final weights are equal bit for bit on the CPU (tolerance 0; `epoch_seconds`, a wall
clock, is the only value left out). Each configuration exercises state that a naive resume
loses: moments and step counts (Adam, NAdam, momentum), schedules (LambdaLR's counter,
ReduceLROnPlateau's best and patience), early stopping's best epoch and weights, batch
norm's running statistics, dropout and input noise (torch's generator), augmentation, and
the shuffling generator.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.data import TensorData, load_dataset
from trainer.loop import EpochMetrics, FitResult, fit
from trainer.state import Checkpointer, TrainingState, load_state, state_bytes

EPOCHS = 6
CONFIGS = {
    "adam-plateau-dropout-bn-noise": TrainConfig(
        optimizer="adam",
        lr=0.01,
        batch_size=32,
        dropout=0.3,
        batch_norm="before",
        input_noise=0.1,
        l1=1e-3,
        lr_schedule="reduce_on_plateau",
        lr_plateau_patience=1,
        lr_plateau_factor=0.5,
        early_stopping_patience=50,
        hidden_layers=2,
        hidden_units=16,
        max_epochs=EPOCHS,
        seed=3,
    ),
    "momentum-step-decoupled": TrainConfig(
        optimizer="momentum",
        lr=0.05,
        batch_size=16,
        weight_decay=1e-3,
        weight_decay_mode="decoupled",
        lr_schedule="step",
        lr_step_every=2,
        lr_step_gamma=0.5,
        grad_clip="norm",
        grad_clip_threshold=1.0,
        hidden_layers=1,
        hidden_units=8,
        max_epochs=EPOCHS,
        seed=5,
    ),
    "nadam-exponential-early-stopping": TrainConfig(
        optimizer="nadam",
        lr=0.02,
        batch_size=64,
        lr_schedule="exponential",
        lr_decay_k=0.1,
        early_stopping_patience=2,
        early_stopping_min_delta=0.05,  # stops early: the best epoch's weights come back
        dropout=0.1,
        hidden_layers=2,
        hidden_units=16,
        max_epochs=EPOCHS,
        seed=7,
    ),
}


@pytest.fixture(scope="module")
def moons() -> TensorData:
    return TensorData.from_splits(load_dataset("moons", n_samples=300, seed=0), "cpu")


@pytest.fixture(scope="module")
def digit_images() -> TensorData:
    splits = load_dataset("digits", n_samples=300, seed=0, shape="image")
    return TensorData.from_splits(splits, "cpu")


def _scramble() -> None:
    """Every global generator somewhere else, as in a new process."""
    torch.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)


def _comparable(curves: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: v for k, v in curves.items() if k != "epoch_seconds"}


def _straight_and_resumed(
    config: TrainConfig, data: TensorData, at: int
) -> tuple[FitResult, FitResult, list[int]]:
    saved: list[TrainingState] = []
    straight = fit(config, data, checkpoint=Checkpointer(saved.append, every_epochs=1))
    state = next(s for s in saved if s.epoch == at)
    _scramble()
    reported: list[int] = []

    def on_epoch(m: EpochMetrics) -> None:
        reported.append(m.epoch)

    # A different seed, as a retried trial gets: the restored state must override it.
    again = dataclasses.replace(config, seed=config.seed + 100)
    resumed = fit(again, data, on_epoch, resume=load_state(state_bytes(state)))
    return straight, resumed, reported


def _assert_same(straight: FitResult, resumed: FitResult) -> None:
    assert _comparable(resumed.curves) == _comparable(straight.curves)
    assert len(resumed.curves["epoch_seconds"]) == len(straight.curves["epoch_seconds"])
    assert (resumed.epochs_run, resumed.best_epoch) == (straight.epochs_run, straight.best_epoch)
    assert resumed.stopped_early == straight.stopped_early
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # tolerance 0 on the CPU


@pytest.mark.parametrize("name", list(CONFIGS))
def test_three_epochs_and_a_resume_equal_six_straight(moons: TensorData, name: str) -> None:
    straight, resumed, reported = _straight_and_resumed(CONFIGS[name], moons, at=3)
    _assert_same(straight, resumed)
    assert resumed.resumed_from == 3
    assert reported == list(range(4, straight.epochs_run + 1))  # only the new epochs
    if name.endswith("early-stopping"):
        assert straight.stopped_early and straight.best_epoch < straight.epochs_run


def test_augmented_cnn_resumes_exactly(digit_images: TensorData) -> None:
    config = TrainConfig(
        family="cnn",
        conv_blocks=1,
        conv_channels=4,
        hidden_layers=1,
        hidden_units=8,
        augment="shift_rotate",
        batch_norm="after",
        optimizer="adamw",
        weight_decay=1e-3,
        batch_size=32,
        max_epochs=4,
        seed=1,
    )
    straight, resumed, _ = _straight_and_resumed(config, digit_images, at=2)
    _assert_same(straight, resumed)


def test_a_state_of_the_last_epoch_resumes_to_the_same_result(moons: TensorData) -> None:
    straight, resumed, reported = _straight_and_resumed(
        CONFIGS["momentum-step-decoupled"], moons, at=EPOCHS
    )
    _assert_same(straight, resumed)
    assert reported == []


def test_a_changed_configuration_is_refused(moons: TensorData) -> None:
    config = dataclasses.replace(CONFIGS["momentum-step-decoupled"], max_epochs=2)
    saved: list[TrainingState] = []
    fit(config, moons, checkpoint=Checkpointer(saved.append, every_epochs=1))
    with pytest.raises(ValueError, match="differs in batch_size"):
        fit(dataclasses.replace(config, batch_size=8), moons, resume=saved[0])
    # More epochs than the first run had is a resume too.
    longer = fit(dataclasses.replace(config, max_epochs=3), moons, resume=saved[-1])
    assert longer.epochs_run == 3 and longer.resumed_from == 2


def test_checkpoints_are_saved_by_epochs_or_by_time() -> None:
    now = [0.0]
    saved: list[int] = []
    by_epochs = Checkpointer(lambda s: saved.append(s.epoch), every_epochs=3)
    assert [e for e in range(1, 10) if by_epochs.due(e) and not by_epochs.start(e)] == [3, 6, 9]
    by_time = Checkpointer(lambda s: None, every_seconds=60, clock=lambda: now[0])
    due = []
    for epoch in range(1, 8):
        now[0] += 25.0  # 25 s per epoch: due after 50+25 = 75 s, then again 75 s later
        if by_time.due(epoch):
            due.append(epoch)
            by_time.start(epoch)
    assert due == [3, 6]
    never = Checkpointer(lambda s: None)
    assert not any(never.due(e) for e in range(1, 100))
    with pytest.raises(ValueError):
        Checkpointer(lambda s: None, every_epochs=0)


def test_garbage_is_not_a_training_state() -> None:
    with pytest.raises(ValueError, match="not a training state"):
        load_state(b"not torch")
