"""Optimization parameters through REST: searched optimizers with schedules, clipping and
early stopping train in a real worker; telemetry reaches the curves API; a diverging trial
fails with its reason while the worker goes on."""

from __future__ import annotations

import math

import httpx
import pytest

from service.core.settings import Settings
from tests.conftest import tiny_spec, unique
from tests.test_api import run_worker, submit


def test_optimizers_schedule_clipping_and_early_stopping_through_rest(
    client: httpx.Client, settings: Settings
) -> None:
    spec = tiny_spec(unique("optim"), n_trials=3)
    spec["objective"] = {"metric": "val_loss", "max_epochs": 6}
    spec["space"] = {
        "optimizer": {"type": "categorical", "choices": ["nadam", "rmsprop", "momentum"]},
        "grad_clip": {"type": "categorical", "choices": ["value", "norm"]},
        "grad_clip_threshold": {"type": "float", "low": 0.5, "high": 2.0},
    }
    spec["fixed"] = {
        "hidden_layers": 1,
        "hidden_units": 16,
        "lr": 0.05,
        "lr_schedule": "exponential",
        "lr_decay_k": 0.2,
        "l1": 1e-4,
        "weight_decay": 1e-3,
        "weight_decay_mode": "decoupled",
        "early_stopping_patience": 2,
    }
    study_id = submit(client, spec)
    run_worker(settings)
    items = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert [t["state"] for t in items] == ["complete"] * 3, items
    for item in items:
        trial = client.get(f"/api/trials/{item['trial_id']}").json()
        curves = {name: [v for _, v in points] for name, points in trial["curves"].items()}
        n = len(curves["val_loss"])
        assert 1 <= n <= 6
        # Per-layer telemetry next to the base curves, one point per epoch run.
        for name in ("grad_norm.0", "grad_norm.1", "weight_norm.0", "weight_norm.1"):
            assert len(curves[name]) == n and all(v > 0 for v in curves[name]), name
        assert all(0.0 <= v <= 1.0 for v in curves["dead_fraction.0"])
        assert curves["lr"] == pytest.approx([0.05 * math.exp(-0.2 * t) for t in range(n)])
        # Early stopping restores the best epoch: the trial's value is the best val_loss.
        assert trial["value"] == pytest.approx(min(curves["val_loss"]), rel=1e-12)
        if n < 6:  # it stopped: the last `patience` epochs did not improve on the best
            assert min(curves["val_loss"][-2:]) >= min(curves["val_loss"])


def test_a_diverging_trial_fails_with_its_reason_and_the_worker_goes_on(
    client: httpx.Client, settings: Settings
) -> None:
    spec = tiny_spec(unique("diverge"), n_trials=2)
    spec["space"] = {"lr": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}}
    spec["fixed"] = {
        "optimizer": "momentum",
        "momentum": 0.99,
        "activation": "leaky_relu",
        "hidden_layers": 4,
        "hidden_units": 64,
        "batch_size": 16,
    }
    spec["enqueue"] = [{"lr": 10.0}, {"lr": 0.01}]
    spec["budget"] = {"n_trials": 1}
    study_id = submit(client, spec)
    run_worker(settings)
    items = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert [t["state"] for t in items] == ["fail", "complete"], items
    assert items[0]["error"] == "DivergedError: diverged at epoch 1: train_loss=nan"
    assert items[1]["params"]["lr"] == 0.01
