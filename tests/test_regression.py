"""Regression (issue 15 §1): the task is inferred or stated, targets are standardized with
training statistics, the network's one output is trained with MSE, curves and test metrics
are RMSE/MAE in the target's units and R², the checkpoint carries the target's statistics,
and the objective must be a metric of the dataset's task (422 naming the field)."""

from __future__ import annotations

import copy
import io
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from tests.conftest import unique
from trainer import TensorData, TrainConfig, evaluate_test, fit, load_dataset
from trainer.checkpoint import checkpoint_bytes, load_checkpoint, rebuild_model
from trainer.data import infer_task, split_and_standardize, split_indices
from trainer.loop import REGRESSION_CURVE_METRICS, evaluate_regression

# ---- the task ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "task"),
    [
        (np.array([0, 1, 2, 1, 0]), "classification"),  # integer labels
        (np.array(["a", "b", "a"]), "classification"),  # text labels
        (np.array([0.0, 1.0, 1.0, 0.0]), "classification"),  # floats encoding 2 classes
        (np.arange(20, dtype=np.float64), "classification"),  # 20 integer values: classes
        (np.arange(21, dtype=np.float64), "regression"),  # 21: too many to be classes
        (np.array([0.5, 1.0, 1.5]), "regression"),  # a non-integer value
        (np.arange(1000, dtype=np.int64), "classification"),  # integer dtype: never inferred
    ],
)
def test_the_task_is_inferred_from_the_target(y: np.ndarray, task: str) -> None:
    assert infer_task(y) == task


def test_diabetes_targets_are_standardized_with_training_statistics() -> None:
    s = load_dataset("diabetes", val_fraction=0.2, test_fraction=0.2, seed=3)
    assert (s.task, s.n_classes) == ("regression", 1)
    assert s.y_train.dtype == np.float32
    assert float(s.y_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(s.y_train.std()) == pytest.approx(1.0, abs=1e-5)
    # Back in original units, the splits are the raw targets (diabetes: 25..346).
    raw = np.concatenate([s.y_train, s.y_val, s.y_test]) * s.target_std + s.target_mean
    assert sorted(np.round(raw, 2)) == sorted(
        np.round(__import__("sklearn.datasets").datasets.load_diabetes().target, 2)
    )
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 442


def test_friedman1_takes_n_samples_and_noise() -> None:
    a = load_dataset("friedman1", n_samples=300, noise=0.0, seed=1)
    b = load_dataset("friedman1", n_samples=300, noise=5.0, seed=1)
    assert a.task == "regression" and a.x_train.shape[1] == 10
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 300
    assert b.target_std > a.target_std  # noise adds variance to the target


def test_regression_splits_are_not_stratified() -> None:
    """Every value is its own 'class': stratifying would refuse the split; regression splits
    at random with the same sizes as classification."""
    y = np.linspace(0, 1, 50).astype(np.float32)
    train, val, test = split_indices(
        y, val_fraction=0.2, test_fraction=0.2, seed=0, task="regression"
    )
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(50))


# ---- training and metrics ------------------------------------------------------------------


def test_regression_metrics_match_scikit_learn_in_original_units() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(40, 3)
    y = torch.randn(40)
    target_std = 7.5
    m = evaluate_regression(model, x, y, target_std)
    pred = model(x)[:, 0].detach().numpy()
    truth = y.numpy()
    assert m["loss"] == pytest.approx(mean_squared_error(truth, pred), rel=1e-5)
    rmse = np.sqrt(mean_squared_error(truth * target_std, pred * target_std))
    assert m["rmse"] == pytest.approx(rmse, rel=1e-5)
    assert m["mae"] == pytest.approx(
        mean_absolute_error(truth * target_std, pred * target_std), rel=1e-5
    )
    assert m["r2"] == pytest.approx(r2_score(truth, pred), rel=1e-5)


def _diabetes() -> TensorData:
    return TensorData.from_splits(load_dataset("diabetes", seed=2), "cpu")


def test_fit_records_the_regression_curves_and_early_stops_on_r2() -> None:
    data = _diabetes()
    config = TrainConfig(
        hidden_layers=1,
        hidden_units=8,
        lr=0.01,
        optimizer="adam",
        max_epochs=6,
        monitor="val_r2",
        early_stopping_patience=2,
        telemetry=False,
    )
    result = fit(config, data)
    assert set(result.curves) == set(REGRESSION_CURVE_METRICS)
    # Early stopping on R² keeps its largest value (a maximized metric).
    r2 = result.curves["val_r2"]
    assert result.value("val_r2") == max(r2)
    # The validation loss is the standardized MSE: 1 - R² up to the split's own variance.
    rmse = result.curves["val_rmse"][-1]
    assert rmse == pytest.approx(np.sqrt(result.curves["val_loss"][-1]) * data.target_std)
    tested = evaluate_test(result.model, data)
    assert set(tested) == {"test_loss", "test_rmse", "test_mae", "test_r2"}


def test_a_classification_monitor_is_refused_for_regression() -> None:
    with pytest.raises(ValueError, match="val_rmse"):
        fit(TrainConfig(max_epochs=1, monitor="val_accuracy"), _diabetes())


def test_the_checkpoint_predicts_in_the_targets_units() -> None:
    data = _diabetes()
    config = TrainConfig(hidden_layers=0, lr=0.03, optimizer="adam", max_epochs=5, telemetry=False)
    config = TrainConfig(**{**config.__dict__, "monitor": "val_rmse"})
    result = fit(config, data)
    blob = checkpoint_bytes(
        result.model,
        config,
        family="mlp",
        input_shape=(10,),
        n_classes=1,
        task=data.task,
        target_mean=data.target_mean,
        target_std=data.target_std,
    )
    ckpt = load_checkpoint(io.BytesIO(blob))
    assert (ckpt.task, ckpt.n_classes) == ("regression", 1)
    model = rebuild_model(ckpt)
    with torch.inference_mode():
        predicted = ckpt.to_target(model(data.x_test)).numpy()
    truth = data.y_test.numpy() * data.target_std + data.target_mean
    rmse = float(np.sqrt(np.mean((predicted - truth) ** 2)))
    assert rmse == pytest.approx(evaluate_test(result.model, data)["test_rmse"], rel=1e-4)


def test_an_uploaded_float_target_trains_as_regression() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) * 10 + 100).astype(np.float32)
    assert infer_task(y) == "regression"
    splits = split_and_standardize(
        x, y, val_fraction=0.25, test_fraction=0.25, seed=0, task="regression"
    )
    data = TensorData.from_splits(splits, "cpu")
    config = TrainConfig(
        hidden_layers=0,
        lr=0.05,
        optimizer="adam",
        max_epochs=40,
        monitor="val_rmse",
        telemetry=False,
    )
    assert evaluate_test(fit(config, data).model, data)["test_r2"] > 0.95


# ---- the spec: objective and task, through REST -----------------------------------------------

DIABETES_SPEC: dict[str, Any] = {
    "name": "diabetes",
    "dataset": {"name": "diabetes", "seed": 2},
    "objective": {"max_epochs": 2},
    "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
    "fixed": {"hidden_layers": 1, "hidden_units": 8},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 1},
}


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(DIABETES_SPEC)
    spec["name"] = unique("reg")
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return spec


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"objective__metric": "val_accuracy"}, "objective.metric", "regression"),
        (
            {"dataset__name": "digits", "objective__metric": "val_rmse"},
            "objective.metric",
            "classification",
        ),
        ({"objective__metric": "val_r2", "objective__direction": "minimize"}, "direction", "max"),
        ({"objective__metric": "val_mae", "objective__direction": "maximize"}, "direction", "min"),
        ({"objective__metric": "test_r2"}, "objective.metric", "unknown metric"),
        ({"dataset__task": "classification"}, "dataset.task", "only be regression"),
        ({"dataset__task": "ordinal"}, "dataset.task", ""),
    ],
)
def test_an_objective_outside_the_task_is_422_naming_the_field(
    client: httpx.Client, changes: dict[str, Any], field: str, words: str
) -> None:
    response = client.post("/api/studies", json=_spec(**changes))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    located = [".".join(str(p) for p in d["loc"][1:]) for d in detail]
    assert any(field in loc for loc in located), detail
    assert words in response.text


def test_a_regression_study_defaults_to_val_rmse_and_reports_its_task(
    client: httpx.Client,
) -> None:
    response = client.post("/api/studies", json=_spec())
    assert response.status_code == 201, response.text
    study = client.get(f"/api/studies/{response.json()['id']}").json()
    assert (study["task"], study["metric"], study["direction"]) == (
        "regression",
        "val_rmse",
        "minimize",
    )
    assert study["spec"]["dataset"]["task"] == "regression"
    client.post(f"/api/studies/{study['id']}/stop")


@pytest.mark.parametrize("metric", ["val_loss", "val_rmse", "val_mae", "val_r2"])
def test_every_regression_metric_is_accepted_with_its_direction(
    client: httpx.Client, metric: str
) -> None:
    response = client.post("/api/studies", json=_spec(objective__metric=metric))
    assert response.status_code == 201, response.text
    study = client.get(f"/api/studies/{response.json()['id']}").json()
    assert study["direction"] == ("maximize" if metric == "val_r2" else "minimize")
    client.post(f"/api/studies/{study['id']}/stop")


# ---- uploads ----------------------------------------------------------------------------------


def _csv(target: list[str]) -> bytes:
    rows = ["a,b,price"] + [f"{i},{i % 7},{t}" for i, t in enumerate(target)]
    return "\n".join(rows).encode()


def _upload(client: httpx.Client, content: bytes) -> str:
    name = unique("upload")
    form = {"name": name, "target": "price"}
    response = client.post("/api/datasets", data=form, files={"file": ("d.csv", content)})
    assert response.status_code == 201, response.text
    return name


def test_an_upload_with_a_continuous_target_is_a_regression_dataset(
    client: httpx.Client,
) -> None:
    name = _upload(client, _csv([f"{100 + 0.37 * i:.2f}" for i in range(60)]))
    info = client.get(f"/api/datasets/{name}").json()
    assert (info["task"], info["n_classes"], info["classes"]) == ("regression", 0, [])
    spec = _spec(dataset__name=name, objective__metric="val_accuracy")
    spec["dataset"].pop("seed")
    refused = client.post("/api/studies", json=spec)
    assert refused.status_code == 422 and '"objective","metric"' in refused.text
    refused = client.post(
        "/api/studies", json={**spec, "dataset": {"name": name, "task": "classification"}}
    )
    assert refused.status_code == 422 and '"dataset","task"' in refused.text
    spec["objective"].pop("metric")  # the default follows the upload's task
    created = client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text
    study = client.get(f"/api/studies/{created.json()['id']}").json()
    assert (study["task"], study["metric"]) == ("regression", "val_rmse")
    client.post(f"/api/studies/{study['id']}/stop")


def test_integer_labels_can_be_regressed_on_when_the_spec_says_so(client: httpx.Client) -> None:
    """Ratings 1..5 are classes by the rule; `dataset.task: regression` regresses on them,
    which needs numeric labels."""
    ratings = _upload(client, _csv([str(1 + i % 5) for i in range(60)]))
    assert client.get(f"/api/datasets/{ratings}").json()["task"] == "classification"
    spec = _spec(dataset__name=ratings, dataset__task="regression")
    spec["dataset"].pop("seed")
    created = client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text
    client.post(f"/api/studies/{created.json()['id']}/stop")
    words = _upload(client, _csv(["cheap" if i % 2 else "dear" for i in range(60)]))
    spec = _spec(dataset__name=words, dataset__task="regression")
    refused = client.post("/api/studies", json=spec)
    assert refused.status_code == 422 and '"dataset","task"' in refused.text, refused.text


def test_the_cli_progress_line_names_the_metric_and_the_task() -> None:
    from service.cli.output import progress_line

    counts = {"complete": 2, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    line = progress_line(
        {
            "id": 7,
            "name": "d",
            "status": "completed",
            "n_trials": 2,
            "counts": counts,
            "best_value": 50.1,
            "metric": "val_rmse",
            "task": "regression",
        }
    )
    assert line.endswith("best val_rmse 50.1000 (regression)"), line


def test_a_learning_curve_over_data_size_reads_r2_for_regression() -> None:
    from trainer.data_size import conclude, learning_curve

    data = _diabetes()
    config = TrainConfig(
        hidden_layers=0, lr=0.03, optimizer="adam", max_epochs=3, monitor="val_rmse"
    )
    points = learning_curve(config, data, fractions=(0.5, 1.0))
    assert [p.n_train for p in points] == [132, 264]
    assert all(-1 < p.val_accuracy <= 1 for p in points)  # R², not accuracy
    assert conclude(points, "val_rmse")["verdict"]


def test_the_example_regression_spec_is_valid() -> None:
    from pathlib import Path

    import yaml

    from service.studies.spec import StudySpec

    path = Path(__file__).resolve().parents[1] / "examples" / "diabetes.yaml"
    spec = StudySpec.model_validate(yaml.safe_load(path.read_text()))
    assert (spec.dataset.builtin_task, spec.objective.direction) == ("regression", "minimize")
