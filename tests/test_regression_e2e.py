"""A regression study on diabetes through REST with a real worker (issue 15 §1, done-when):
the best trial's test R² is at least 0.40 (scikit-learn's LinearRegression gets 0.428 on the
same split; bench/regression_diabetes.py prints both), its curves are the regression ones,
its saved model predicts in the target's units, and its diagnosis reads MSE against the
target's variance. On SQLite and, with HPO_TEST_DATABASE_URL, PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from tests.test_e2e import Service
from trainer import load_dataset
from trainer.checkpoint import load_checkpoint, rebuild_model

pytestmark = pytest.mark.slow

# Found with bench/regression_diabetes.py: every trial seed of both choices reaches test R²
# 0.407-0.440 on this split (seed 2), in about 2 s per trial.
DIABETES_STUDY = {
    "name": "diabetes-e2e",
    "dataset": {"name": "diabetes", "seed": 2, "val_fraction": 0.2, "test_fraction": 0.2},
    "objective": {"metric": "val_rmse", "max_epochs": 40},
    "space": {"hidden_layers": {"type": "categorical", "choices": [0, 1]}},
    "fixed": {
        "hidden_units": 8,
        "optimizer": "adam",
        "lr": 0.01,
        "batch_size": 32,
        "weight_decay": 1e-2,
        "early_stopping_patience": 10,
    },
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 2},
}


def test_a_diabetes_study_reaches_test_r2_of_0_40(tmp_path: Path, database_url: str) -> None:
    svc = Service(tmp_path, workers=1, db_url=database_url)
    try:
        created = svc.client.post("/api/studies", json=DIABETES_STUDY)
        assert created.status_code == 201, created.text
        study = svc.wait_finished(created.json()["id"])
        assert study["status"] == "completed", (study, svc.log())
        assert (study["task"], study["metric"], study["direction"]) == (
            "regression",
            "val_rmse",
            "minimize",
        )
        best = svc.client.get(f"/api/studies/{study['id']}/best").json()
        tested = best["test_metrics"]
        assert tested["test_r2"] >= 0.40, (best, svc.trials(study["id"]))
        assert best["test_accuracy"] is None
        assert tested["test_rmse"] > 10  # in the target's units (diabetes: std about 78)

        trial = svc.client.get(f"/api/trials/{best['trial_id']}").json()
        assert trial["test_metrics"] == tested
        assert {"val_rmse", "val_mae", "val_r2", "train_loss", "val_loss"} <= set(trial["curves"])
        assert "val_accuracy" not in trial["curves"]
        assert best["value"] == pytest.approx(min(v for _, v in trial["curves"]["val_rmse"]))
        findings = {f["kind"]: f["evidence"] for f in trial["diagnosis"]}
        fit = [k for k in ("overfit", "underfit", "good_fit", "inconclusive") if k in findings]
        assert len(fit) == 1, findings
        # Read against the target's variance (1 in standardized units), not ln K.
        if "chance_loss" in findings[fit[0]]:
            assert findings[fit[0]]["chance_loss"] == 1.0

        model = svc.client.get(f"/api/trials/{best['trial_id']}/model")
        assert model.status_code == 200
        ckpt = load_checkpoint(io.BytesIO(model.content))
        assert ckpt.task == "regression"
        splits = load_dataset("diabetes", seed=2)
        with torch.inference_mode():
            predicted = ckpt.to_target(rebuild_model(ckpt)(torch.from_numpy(splits.x_test)))
        truth = torch.from_numpy(splits.y_test) * splits.target_std + splits.target_mean
        rmse = float(((predicted - truth) ** 2).mean().sqrt())
        assert rmse == pytest.approx(tested["test_rmse"], rel=1e-3)
    finally:
        assert svc.stop() == 0, svc.log()
