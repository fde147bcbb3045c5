"""Test R² on scikit-learn's diabetes data: our trainer's MLP against ordinary least squares.

Both fit the same split as a study's workers make it (`trainer.load_dataset("diabetes")`:
val_fraction 0.2, test_fraction 0.2, the dataset seed; features standardized with training
statistics), and are scored on the same test rows. The baseline is scikit-learn's
`LinearRegression` on the training split; ours trains the configurations of
tests/test_regression_e2e.py (its fixed values with each `hidden_layers` it searches, trial
seeds 0..2) on the training split and keeps the one with the best validation RMSE, as the
study's best trial. Every seed's baseline is printed too: on 89 test rows the split alone
moves least squares' test R² from 0.34 to 0.59.

    python bench/regression_diabetes.py [--seed 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from trainer import TensorData, TrainConfig, evaluate_test, fit, load_dataset

# The e2e test's study: these fixed values, searching hidden_layers over these choices.
FIXED = {
    "hidden_units": 8,
    "optimizer": "adam",
    "lr": 0.01,
    "batch_size": 32,
    "weight_decay": 1e-2,
    "early_stopping_patience": 10,
}
HIDDEN_LAYERS = (0, 1)
TRIAL_SEEDS = (0, 1, 2)
MAX_EPOCHS = 40


def ols_r2(seed: int) -> float:
    """scikit-learn's LinearRegression test R² on the split of `seed`."""
    s = load_dataset("diabetes", val_fraction=0.2, test_fraction=0.2, seed=seed)
    model = LinearRegression().fit(s.x_train, s.y_train)  # R² is the same in any units
    return float(r2_score(s.y_test, model.predict(s.x_test)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2, help="the dataset split's seed")
    args = parser.parse_args()
    splits = load_dataset("diabetes", val_fraction=0.2, test_fraction=0.2, seed=args.seed)
    # The baseline sees the same standardized features; targets back in original units.
    y_train = splits.y_train * splits.target_std + splits.target_mean
    y_test = splits.y_test * splits.target_std + splits.target_mean
    started = time.perf_counter()
    model = LinearRegression().fit(splits.x_train, y_train)
    ols = float(r2_score(y_test, model.predict(splits.x_test)))
    ols_seconds = time.perf_counter() - started

    torch.set_num_threads(1)  # as a worker process trains
    data = TensorData.from_splits(splits, "cpu")
    best: tuple[float, float, str] | None = None  # (val_rmse, test_r2, which)
    started = time.perf_counter()
    for trial_seed in TRIAL_SEEDS:
        for layers in HIDDEN_LAYERS:
            config = TrainConfig.from_params(
                {**FIXED, "hidden_layers": layers},
                max_epochs=MAX_EPOCHS,
                seed=trial_seed,
                monitor="val_rmse",
            )
            result = fit(config, data)
            val_rmse = result.value("val_rmse")
            test_r2 = evaluate_test(result.model, data)["test_r2"]
            which = f"hidden_layers={layers} trial seed {trial_seed}"
            print(f"  {which}: val_rmse {val_rmse:.2f}  test R² {test_r2:.3f}")
            if best is None or val_rmse < best[0]:
                best = (val_rmse, test_r2, which)
    mlp_seconds = (time.perf_counter() - started) / (len(TRIAL_SEEDS) * len(HIDDEN_LAYERS))
    assert best is not None
    print(
        f"diabetes, seed {args.seed}: {len(splits.y_train)} train / {len(splits.y_test)} test rows"
    )
    print(f"LinearRegression test R²: {ols:.3f}  ({ols_seconds:.3f} s)")
    print(
        f"MLP (best by val_rmse: {best[2]}) test R²: {best[1]:.3f}  ({mlp_seconds:.1f} s per "
        f"fit); ratio to LinearRegression {best[1] / ols:.2f}"
    )
    print("LinearRegression test R² by split seed:", {k: round(ols_r2(k), 3) for k in range(10)})


if __name__ == "__main__":
    main()
