"""Test R² on scikit-learn's diabetes data: our trainer's MLP against ordinary least squares.

Both fit the same split as a study's workers make it (`trainer.load_dataset("diabetes")`:
val_fraction 0.2, test_fraction 0.2, seed 0; features standardized with training
statistics), and are scored on the same test rows. The baseline is scikit-learn's
`LinearRegression` on the training split; ours trains the configurations of
tests/test_regression_e2e.py (the study's fixed values with each `lr` it searches) on the
training split and keeps the one with the best validation RMSE, as the study's best trial.

    python bench/regression_diabetes.py [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from trainer import TensorData, TrainConfig, evaluate_test, fit, load_dataset

# The e2e test's study: these fixed values, searching lr over these choices.
FIXED = {
    "hidden_layers": 1,
    "hidden_units": 32,
    "optimizer": "adam",
    "batch_size": 32,
    "weight_decay": 1e-3,
    "early_stopping_patience": 10,
}
LRS = (0.003, 0.01)
MAX_EPOCHS = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="the dataset split's seed")
    args = parser.parse_args()
    splits = load_dataset("diabetes", val_fraction=0.2, test_fraction=0.2, seed=args.seed)
    # The baseline sees the same standardized features; targets back in original units.
    y_train = splits.y_train * splits.target_std + splits.target_mean
    y_test = splits.y_test * splits.target_std + splits.target_mean
    started = time.perf_counter()
    ols = LinearRegression().fit(splits.x_train, y_train)
    ols_r2 = r2_score(y_test, ols.predict(splits.x_test))
    ols_seconds = time.perf_counter() - started

    data = TensorData.from_splits(splits, "cpu")
    best: tuple[float, float, float] | None = None  # (val_rmse, test_r2, lr)
    started = time.perf_counter()
    for trial_number, lr in enumerate(LRS):
        config = TrainConfig.from_params(
            {**FIXED, "lr": lr}, max_epochs=MAX_EPOCHS, seed=trial_number, monitor="val_rmse"
        )
        result = fit(config, data)
        val_rmse = result.value("val_rmse")
        test_r2 = evaluate_test(result.model, data)["test_r2"]
        print(f"  lr={lr:<6} val_rmse {val_rmse:.2f}  test R² {test_r2:.3f}")
        if best is None or val_rmse < best[0]:
            best = (val_rmse, test_r2, lr)
    mlp_seconds = time.perf_counter() - started
    assert best is not None
    print(f"diabetes, seed {args.seed}: {len(splits.y_train)} train / {len(splits.y_test)} test rows")
    print(f"LinearRegression test R²: {ols_r2:.3f}  ({ols_seconds:.3f} s)")
    print(
        f"MLP (best by val_rmse, lr={best[2]}) test R²: {best[1]:.3f}  ({mlp_seconds:.1f} s); "
        f"ratio to LinearRegression {best[1] / ols_r2:.2f}"
    )
    print(f"target std {splits.target_std:.1f}; numpy {np.__version__}")


if __name__ == "__main__":
    main()
