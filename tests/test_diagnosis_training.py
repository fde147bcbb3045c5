"""Real training runs are diagnosed correctly, each with 3 seeds giving the same verdict.

Small on purpose (digits, at most ~1000 training rows) so each run takes about a second.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pytest
import torch

from trainer import DivergedError, EpochMetrics, TensorData, TrainConfig, fit, load_dataset
from trainer.data_size import subsample
from trainer.diagnosis import TrialRun, diagnose
from trainer.params import PARAMS

SEEDS = (0, 1, 2)


@lru_cache(maxsize=1)
def digits() -> TensorData:
    return TensorData.from_splits(load_dataset("digits", seed=0), "cpu")


def train_and_diagnose(
    params: dict[str, Any], *, epochs: int, seed: int, train_fraction: float = 1.0
) -> tuple[set[str], TrialRun]:
    """Train like a worker does (curves recorded per epoch; a non-finite loss fails the
    trial with the trainer's error) and diagnose the result."""
    torch.set_num_threads(1)
    data = subsample(digits(), train_fraction, seed)
    curves: dict[str, list[float]] = {}

    def on_epoch(m: EpochMetrics) -> bool:
        for name, value in m.values.items():
            curves.setdefault(name, []).append(value)
        return False

    state, error = "complete", None
    try:
        fit(TrainConfig.from_params(params, max_epochs=epochs, seed=seed), data, on_epoch)
    except DivergedError as e:
        state, error = "fail", f"DivergedError: {e}"
    run = TrialRun(
        curves=curves,
        state=state,
        error=error,
        n_classes=data.n_classes,
        max_epochs=epochs,
    )
    return {f.kind for f in diagnose(run)}, run


@pytest.mark.parametrize("seed", SEEDS)
def test_big_unregularized_mlp_on_5_percent_of_digits_overfits(seed: int) -> None:
    # 5% of digits' 1797 rows = 90 training rows (stratified) for a 3x512 MLP.
    kinds, run = train_and_diagnose(
        # One full batch per epoch: 200 optimizer steps.
        {
            "hidden_layers": 3,
            "hidden_units": 512,
            "dropout": 0.0,
            "weight_decay": 0.0,
            "batch_size": 128,
        },
        epochs=200,
        seed=seed,
        train_fraction=0.05 * 1797 / 1077,
    )
    assert "overfit" in kinds, kinds
    assert not kinds & {"good_fit", "underfit", "diverged"}
    assert min(run.curves["train_loss"]) < 0.01  # it memorized its 90 rows


@pytest.mark.parametrize("seed", SEEDS)
def test_one_hidden_unit_underfits(seed: int) -> None:
    kinds, _ = train_and_diagnose({"hidden_layers": 1, "hidden_units": 1}, epochs=20, seed=seed)
    assert "underfit" in kinds, kinds
    assert not kinds & {"good_fit", "overfit", "diverged"}


@pytest.mark.parametrize("seed", SEEDS)
def test_l2_of_one_underfits(seed: int) -> None:
    kinds, _ = train_and_diagnose({"weight_decay": 1.0}, epochs=10, seed=seed)
    assert "underfit" in kinds, kinds
    assert not kinds & {"good_fit", "overfit", "diverged"}


@pytest.mark.parametrize("seed", SEEDS)
def test_sgd_with_lr_10_diverges(seed: int) -> None:
    kinds, run = train_and_diagnose({"optimizer": "sgd", "lr": 10.0}, epochs=20, seed=seed)
    assert "diverged" in kinds, kinds
    assert run.state == "fail"
    assert not kinds & {"good_fit", "overfit", "underfit"}


@pytest.mark.parametrize("seed", SEEDS)
def test_well_regularized_mlp_fits_well(seed: int) -> None:
    kinds, _ = train_and_diagnose(
        {"hidden_units": 128, "dropout": 0.3, "weight_decay": 1e-3}, epochs=20, seed=seed
    )
    assert "good_fit" in kinds, kinds
    assert not kinds & {"overfit", "underfit", "diverged", "oscillating"}


@pytest.mark.skipif(
    "init_std" not in PARAMS, reason="needs the trainer's init/init_std and grad_norm telemetry"
)
@pytest.mark.parametrize("seed", SEEDS)
def test_deep_sigmoid_mlp_with_tiny_init_has_vanishing_gradients(seed: int) -> None:
    kinds, run = train_and_diagnose(
        {
            "hidden_layers": 10,
            "hidden_units": 64,
            "activation": "sigmoid",
            "init": "normal",
            "init_std": 0.01,
        },
        epochs=5,
        seed=seed,
        train_fraction=0.5,
    )
    assert "grad_norm.0" in run.curves, "the trainer records per-layer gradient norms"
    assert "vanishing_gradients" in kinds, kinds
    assert "good_fit" not in kinds
