"""Study-report pieces without a database: boundary hits and the advice paragraph; and the
data-size learning curve's subsampling and verdict."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, create_trial

from service.analysis.report import _advice, boundary_hits
from service.studies.spec import load_spec
from trainer import TensorData, load_dataset
from trainer.data_size import HELPS, NO_HELP, SizePoint, conclude, epochs_for, subsample

SPACE = load_spec(
    {
        "name": "s",
        "dataset": {"name": "digits"},
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "batch_size": {"type": "categorical", "choices": [32, 64]},
        },
        "budget": {"n_trials": 1},
    }
).space


def trial(value: float, lr: float, dropout: float) -> FrozenTrial:
    return create_trial(
        value=value,
        params={"lr": lr, "dropout": dropout},
        distributions={
            "lr": FloatDistribution(1e-4, 1e-1, log=True),
            "dropout": FloatDistribution(0.0, 0.5),
        },
    )


def test_best_trials_piled_at_the_top_of_lr_ask_to_widen_it_upward() -> None:
    # The best 3 of 8 (accuracy, maximized) all have lr within 10% (log scale) of 0.1.
    done = [trial(0.97, 0.09, 0.2), trial(0.96, 0.08, 0.3), trial(0.95, 0.07, 0.1)]
    done += [trial(0.5 + i / 100, 1e-3, 0.25) for i in range(5)]
    (hit,) = boundary_hits(SPACE, done, "maximize")
    assert (hit.param, hit.edge) == ("lr", "high")
    assert hit.advice.startswith("widen lr upward: 3 of the 3 best trials have lr within 10%")
    assert '"lr": {"low": 0.0001, "high": 1}' in hit.advice  # log range: one decade more


def test_direction_decides_which_trials_are_best() -> None:
    done = [trial(0.97, 0.09, 0.2), trial(0.96, 0.08, 0.3), trial(0.95, 0.07, 0.1)]
    done += [trial(0.5 + i / 100, 1e-3, 0.25) for i in range(5)]
    # Minimizing, the best are the 0.5x trials in the middle of the range: no hit.
    assert boundary_hits(SPACE, done, "minimize") == []


def test_one_of_three_at_an_edge_is_not_a_pile() -> None:
    done = [trial(0.97, 0.09, 0.2), trial(0.96, 1e-3, 0.3), trial(0.95, 2e-3, 0.1)]
    assert boundary_hits(SPACE, done, "maximize") == []


def test_a_pile_at_the_parameters_own_limit_says_fix_it() -> None:
    done = [trial(0.97, 1e-3, 0.0), trial(0.96, 2e-3, 0.01), trial(0.95, 3e-3, 0.02)]
    (hit,) = boundary_hits(SPACE, done, "maximize")
    assert (hit.param, hit.edge) == ("dropout", "low")
    assert "dropout's own limit: fix it at 0" in hit.advice


def test_too_few_trials_give_no_hits() -> None:
    assert boundary_hits(SPACE, [trial(0.9, 0.09, 0.0), trial(0.8, 0.09, 0.0)], "maximize") == []


def test_advice_is_built_from_the_facts() -> None:
    best_findings = [
        {"kind": "overfit", "remedies": ["raise dropout (this trial 0.05; space allows up to 0.5)"]}
    ]
    text = _advice(
        4,
        Counter({"overfit": 3, "good_fit": 1}),
        (2, 0.9612, "val_accuracy"),
        best_findings,
        {"dropout": 0.7, "lr": 0.3},
        [],
    )
    assert text.startswith("4 finished trials diagnosed: 3 overfit, 1 good_fit.")
    assert (
        "The best trial (#2, val_accuracy 0.9612) shows overfit; first remedy: raise dropout"
        in text
    )
    assert "Most trials overfit:" in text
    assert "dropout matters most (importance 0.70), then lr (0.30)." in text
    assert _advice(0, Counter(), None, [], {}, []) == "No finished trials yet: nothing to report."


# ---- data-size learning curve --------------------------------------------------------------


def point(fraction: float, train_acc: float, val_acc: float) -> SizePoint:
    return SizePoint(fraction, int(1000 * fraction), 10, 0.1, 0.2, train_acc, val_acc)


@pytest.mark.parametrize(
    ("points", "verdict"),
    [
        # Validation still climbing over the last doubling: variance, data helps.
        (
            [
                point(0.1, 1.0, 0.80),
                point(0.25, 1.0, 0.86),
                point(0.5, 1.0, 0.90),
                point(1.0, 1.0, 0.93),
            ],
            HELPS,
        ),
        # Flat (+0.003) and train/val within 0.03: converged together.
        (
            [
                point(0.1, 1.0, 0.88),
                point(0.25, 1.0, 0.95),
                point(0.5, 0.998, 0.964),
                point(1.0, 0.996, 0.967),
            ],
            NO_HELP,
        ),
        # Flat but still 0.2 apart: the curves have not met, more data narrows the gap.
        ([point(0.5, 1.0, 0.80), point(1.0, 1.0, 0.801)], HELPS),
        # Converged together at a poor level: bias; capacity, not data.
        ([point(0.5, 0.60, 0.58), point(1.0, 0.60, 0.581)], NO_HELP),
    ],
)
def test_learning_curve_verdicts(points: list[SizePoint], verdict: str) -> None:
    result = conclude(points)
    assert result["verdict"] == verdict
    gain = points[-1].val_accuracy - points[-2].val_accuracy
    assert result["evidence"]["gain_last_doubling"] == pytest.approx(gain)
    if points[-1].train_accuracy < 0.9 and verdict == NO_HELP:
        assert "poor level" in result["explanation"]


def test_subsample_is_stratified_and_keeps_validation_whole() -> None:
    data = TensorData.from_splits(load_dataset("digits", seed=0), "cpu")
    part = subsample(data, 0.25, seed=3)
    assert part.x_train.shape[0] == round(0.25 * data.x_train.shape[0])
    assert torch.equal(part.x_val, data.x_val)
    full = np.bincount(data.y_train.numpy()) / data.y_train.shape[0]
    sub = np.bincount(part.y_train.numpy(), minlength=10) / part.y_train.shape[0]
    assert np.abs(full - sub).max() < 0.01  # class shares kept (stratified)
    # Rows are real training rows, not copies or noise.
    rows = {tuple(r) for r in data.x_train.numpy().round(5)}
    assert all(tuple(r) in rows for r in part.x_train.numpy().round(5))
    assert subsample(data, 1.0, seed=0) is data


def test_smaller_sizes_get_as_many_optimizer_steps() -> None:
    assert [epochs_for(f, 20) for f in (0.1, 0.25, 0.5, 1.0)] == [200, 80, 40, 20]
    assert epochs_for(0.01, 20) == 200  # capped at 10x max_epochs
