"""Diagnosis reads regression curves (issue 15 §1): losses are the MSE of standardized
targets, so chance level, predicting the training mean, is 1 (the target's variance);
errors are the fraction of variance unexplained (training loss, 1 - val_r2), chance error 1.
Table tests like the classification ones (tests/test_diagnosis_fit.py), and planted
under- and overfit regression runs trained for real."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from tests.test_diagnosis import plateau, rise_after
from trainer import TensorData, TrainConfig, fit, load_dataset
from trainer.data import split_and_standardize
from trainer.diagnosis import TrialRun, diagnose
from trainer.fit_verdict import FIT_KINDS


def reg_curves(
    train: list[float], val: list[float], val_r2_end: float | None = None
) -> dict[str, list[float]]:
    """Standardized-MSE curves; val_r2 = 1 - val MSE unless an end value is planted (the
    validation split's own variance differs a little from the training split's)."""
    out = {"train_loss": train, "val_loss": val}
    if val_r2_end is None:
        out["val_r2"] = [1 - v for v in val]
    else:
        out["val_r2"] = plateau(0.0, val_r2_end, len(val), tau=2.0)
    return out


@dataclass
class Case:
    name: str
    curves: dict[str, list[float]]
    verdict: str
    n_val: int | None = 200
    kept_epoch: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    why: str = ""


CASES = [
    Case(
        "both fall to 5% and 7% of the variance: good fit",
        reg_curves(plateau(1.0, 0.05, 20), plateau(1.0, 0.07, 20)),
        "good_fit",
        evidence={"chance_loss": 1.0, "chance_error": 1.0},
    ),
    Case(
        "training stays at 70% of the variance, validation alike: underfit",
        reg_curves(plateau(1.0, 0.7, 20), plateau(1.05, 0.74, 20)),
        "underfit",
        evidence={"train_loss_over_chance": 0.7},
        why="of the chance level (the target's variance)",
    ),
    Case(
        "validation MSE turns up from epoch 6 while training falls: overfit",
        reg_curves(plateau(1.0, 0.02, 30), rise_after(0.3, 6, 0.6, 30)),
        "overfit",
        evidence={"val_loss_min_epoch": 6},
        why="validation loss rose",
    ),
    Case(
        "training explains 99%, validation 70%: overfit from the error gap",
        reg_curves(plateau(1.0, 0.01, 20), plateau(1.0, 0.3, 20)),
        "overfit",
        evidence={"train_error": 0.01, "val_error": 0.3},
        why="the validation score is clearly worse",
    ),
    Case(
        "an 8-point gap on 8 validation rows is within noise: good fit",
        reg_curves(plateau(1.0, 0.1, 20), plateau(1.0, 0.18, 20)),
        "good_fit",
        n_val=8,
    ),
    Case(
        "an 8-point gap on 2000 validation rows is not noise: not a good fit",
        reg_curves(plateau(1.0, 0.1, 20), plateau(1.0, 0.18, 20)),
        "inconclusive",
        n_val=2000,
        evidence={"leans": "bias"},  # the gap (0.08) is smaller than the bias (0.1)
        why="a good fit is within 2.5%",
    ),
    Case(
        "early stopping kept epoch 6: the verdict reads the kept epoch",
        reg_curves(plateau(1.0, 0.05, 30), rise_after(0.07, 6, 0.6, 30)),
        "good_fit",
        kept_epoch=6,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_verdict_reads_regression_in_mse_and_variance_explained(case: Case) -> None:
    run = TrialRun(
        curves=case.curves,
        n_classes=1,
        n_val=case.n_val,
        max_epochs=len(case.curves["train_loss"]),
        monitor="val_rmse",
        kept_epoch=case.kept_epoch,
        state="pruned",  # no still_improving: only the fit is under test
        task="regression",
    )
    findings = {f.kind: f for f in diagnose(run)}
    assert set(findings) & set(FIT_KINDS) == {case.verdict}, findings
    ev = findings[case.verdict].evidence
    for name, expected in case.evidence.items():
        if isinstance(expected, str):
            assert ev[name] == expected, name
        else:
            assert ev[name] == pytest.approx(expected, rel=1e-2), name
    assert case.why in str(ev.get("why", "")), ev


def test_a_regression_loss_ten_times_the_variance_is_divergence() -> None:
    run = TrialRun(
        curves=reg_curves([1.0, 4.0, 12.0], [1.0, 4.5, 13.0]),
        n_classes=1,
        task="regression",
    )
    kinds = [f.kind for f in diagnose(run)]
    assert kinds == ["diverged"]


def test_classification_chance_is_not_applied_to_regression() -> None:
    """A standardized MSE of 0.8 is near chance for regression (underfit), while for a
    2-class task the same number is above ln 2 and would be read on another scale."""
    curves = reg_curves(plateau(1.0, 0.8, 20), plateau(1.0, 0.82, 20))
    reg = TrialRun(curves=curves, n_classes=1, n_val=200, state="pruned", task="regression")
    (verdict,) = [f for f in diagnose(reg) if f.kind in FIT_KINDS]
    assert verdict.kind == "underfit"
    assert verdict.evidence["chance_loss"] == 1.0


# ---- planted runs, trained for real --------------------------------------------------------


def _friedman(n: int, noise: float, seed: int = 0) -> TensorData:
    splits = load_dataset(
        "friedman1", n_samples=n, noise=noise, seed=seed, val_fraction=0.3, test_fraction=0.1
    )
    return TensorData.from_splits(splits, "cpu")


def _verdict(config: TrainConfig, data: TensorData) -> tuple[str, dict[str, Any]]:
    result = fit(config, data)
    run = TrialRun(
        curves=result.curves,
        n_classes=1,
        n_val=int(data.y_val.shape[0]),
        max_epochs=config.max_epochs,
        monitor=config.monitor,
        state="pruned",
        task="regression",
    )
    (finding,) = [f for f in diagnose(run) if f.kind in FIT_KINDS]
    return finding.kind, dict(finding.evidence)


def test_a_planted_underfit_regression_run_is_underfit() -> None:
    """A linear-capacity net (one 1-unit hidden layer, heavy L2) on friedman1's non-linear
    target cannot get far below the variance."""
    data = _friedman(600, 1.0)
    config = TrainConfig(
        hidden_layers=1,
        hidden_units=1,
        weight_decay=0.5,
        lr=0.01,
        optimizer="adam",
        max_epochs=15,
        monitor="val_rmse",
        telemetry=False,
    )
    kind, ev = _verdict(config, data)
    assert kind == "underfit", ev
    assert ev["train_loss_over_chance"] >= 0.4


def test_a_planted_overfit_regression_run_is_overfit() -> None:
    """A wide net on 60 noisy training rows memorizes them: training MSE falls toward 0
    while validation stays far above it."""
    x = np.random.default_rng(0).uniform(size=(200, 10)).astype(np.float32)
    y = (x[:, 0] * 3 + np.random.default_rng(1).normal(scale=1.0, size=200)).astype(np.float32)
    splits = split_and_standardize(
        x, y, val_fraction=0.5, test_fraction=0.2, seed=0, task="regression"
    )
    data = TensorData.from_splits(splits, "cpu")
    config = TrainConfig(
        hidden_layers=2,
        hidden_units=256,
        lr=0.003,
        optimizer="adam",
        max_epochs=60,
        batch_size=16,
        monitor="val_rmse",
        telemetry=False,
    )
    kind, ev = _verdict(config, data)
    assert kind == "overfit", ev
    assert ev["train_error"] < ev["val_error"]
