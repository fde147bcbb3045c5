"""A CNN study on digits as 1x8x8 images through REST with real worker processes."""

from __future__ import annotations

import pytest

from tests.test_e2e import Service

pytestmark = pytest.mark.slow

CNN_SPEC = {
    "name": "digits-cnn",
    "dataset": {"name": "digits", "shape": "image", "val_fraction": 0.2, "test_fraction": 0.2},
    "model": {"family": "cnn"},
    "objective": {"metric": "val_accuracy", "max_epochs": 6},
    "space": {"init": {"type": "categorical", "choices": ["he_normal", "xavier_uniform"]}},
    "fixed": {
        "conv_blocks": 2,
        "conv_channels": 16,
        "kernel_size": 3,
        "pooling": "max",
        "batch_norm": "before",
        "hidden_layers": 0,
        "lr": 0.003,
        "batch_size": 32,
    },
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 2},
}


def test_cnn_study_on_digit_images_reaches_95_percent(served: Service) -> None:
    svc = served
    response = svc.client.post("/api/studies", json=CNN_SPEC)
    assert response.status_code == 201, response.text
    study = svc.wait_finished(response.json()["id"])
    assert study["status"] == "completed", (study, svc.log())
    trials = svc.trials(study["id"])
    assert [t["state"] for t in trials] == ["complete", "complete"], trials
    assert study["best_value"] >= 0.95, trials
    best = svc.client.get(f"/api/studies/{study['id']}/best").json()
    assert best["test_accuracy"] >= 0.93
    detail = svc.client.get(f"/api/trials/{best['trial_id']}").json()
    assert [step for step, _ in detail["curves"]["val_accuracy"]] == list(range(1, 7))
