"""Datasets, splits and standardization; the parameter registry and TrainConfig."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from sklearn import datasets as skdata

from trainer.config import TrainConfig
from trainer.data import (
    BUILTIN,
    BUILTIN_REGRESSION,
    DataSplits,
    TensorData,
    load_dataset,
    split_and_standardize,
)
from trainer.params import ACTIVATIONS, OPTIMIZERS, PARAMS, ParamSpec, check_param

DATASETS = ("digits", "breast_cancer", "wine", "moons", "blobs")


def _raw(
    name: str, *, n_samples: int = 1000, noise: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The dataset straight from sklearn, independently of trainer.data."""
    if name == "digits":
        return skdata.load_digits(return_X_y=True)
    if name == "breast_cancer":
        return skdata.load_breast_cancer(return_X_y=True)
    if name == "wine":
        return skdata.load_wine(return_X_y=True)
    if name == "moons":
        return skdata.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return skdata.make_blobs(n_samples=n_samples, centers=3, cluster_std=noise, random_state=seed)


def _splits(s: DataSplits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        "train": (s.x_train, s.y_train),
        "val": (s.x_val, s.y_val),
        "test": (s.x_test, s.y_test),
    }


def test_builtin_names() -> None:
    # The regression sets are tested in tests/test_regression.py (no classes to stratify).
    assert set(BUILTIN) == set(DATASETS) | BUILTIN_REGRESSION


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize(("val_fraction", "test_fraction"), [(0.2, 0.2), (0.15, 0.3)])
def test_split_sizes_are_fractions_of_whole(
    name: str, val_fraction: float, test_fraction: float
) -> None:
    s = load_dataset(name, val_fraction=val_fraction, test_fraction=test_fraction, seed=0)
    _, y_raw = _raw(name)
    n = len(y_raw)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == n
    assert abs(len(s.y_val) - val_fraction * n) <= 1
    assert abs(len(s.y_test) - test_fraction * n) <= 1
    for split, (x, y) in _splits(s).items():
        assert x.shape == (len(y), s.n_features), split
        assert x.dtype == np.float32 and y.dtype == np.int64, split


@pytest.mark.parametrize("name", DATASETS)
def test_splits_partition_the_raw_data_and_use_train_statistics(name: str) -> None:
    """Undo standardization with the reported mean/std and find every raw row exactly once.

    Inverting x*std + mean must give back raw rows for val and test too, which proves that
    val/test were transformed with the TRAIN mean/std, and that the three splits are a
    disjoint partition of the dataset with labels kept.
    """
    s = load_dataset(name, seed=0)
    x_raw, y_raw = _raw(name)
    mean, std = s.mean.astype(np.float64), s.std.astype(np.float64)
    # Compare in standardized units so every feature has a comparable scale.
    z_raw = (x_raw - mean) / std
    tree = cKDTree(z_raw)
    matched: list[np.ndarray] = []
    for split, (x, y) in _splits(s).items():
        if len(y) == 0:
            continue
        dist, idx = tree.query(x.astype(np.float64))
        assert dist.max() < 1e-3, split
        np.testing.assert_array_equal(y, y_raw[idx], err_msg=split)
        # The recovered raw values (x*std + mean) are the raw rows, up to float32 rounding.
        np.testing.assert_allclose(
            x.astype(np.float64) * std + mean, x_raw[idx], rtol=1e-5, atol=1e-4 * std.max()
        )
        matched.append(idx)
    all_idx = np.concatenate(matched)
    assert sorted(all_idx.tolist()) == list(range(len(y_raw)))  # each raw row exactly once

    # mean/std are those of the raw TRAINING rows (std=1 where a column is constant).
    train_raw = x_raw[matched[0]]
    want_std = train_raw.std(axis=0)
    constant = want_std == 0
    want_std[constant] = 1.0
    np.testing.assert_allclose(s.mean, train_raw.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.std, want_std, rtol=1e-4)
    assert s.mean.dtype == np.float32 and s.std.dtype == np.float32


@pytest.mark.parametrize("name", DATASETS)
def test_train_split_is_standardized_val_is_not_forced(name: str) -> None:
    s = load_dataset(name, seed=0)
    non_constant = s.x_train.std(axis=0) > 0
    assert non_constant.any()
    np.testing.assert_allclose(s.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(s.x_train.std(axis=0)[non_constant], 1.0, rtol=1e-4)
    # Constant training columns: std reported as exactly 1 and the column centred at 0.
    assert np.all(s.std[~non_constant] == 1.0)
    assert np.all(s.x_train[:, ~non_constant] == 0.0)
    # Val was not standardized with its own statistics.
    val_mean = np.abs(s.x_val.mean(axis=0))
    assert val_mean.max() > 1e-2


def test_digits_has_constant_training_columns_with_std_one() -> None:
    s = load_dataset("digits", seed=0)
    constant = np.flatnonzero(s.x_train.std(axis=0) == 0)
    assert 0 in constant  # the top-left pixel is always 0
    assert np.all(s.std[constant] == 1.0)


def test_split_and_standardize_constant_feature() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(5.0, 3.0, 100), np.full(100, 7.0)]).astype(np.float32)
    y = (np.arange(100) % 2).astype(np.int64)
    s = split_and_standardize(x, y, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert s.std[1] == 1.0 and s.mean[1] == pytest.approx(7.0)
    for split, (xs, _) in _splits(s).items():
        assert np.all(xs[:, 1] == 0.0), split
        assert np.all(np.isfinite(xs)), split


@pytest.mark.parametrize("name", ["moons", "blobs"])
def test_synthetic_val_and_test_rows_not_in_train(name: str) -> None:
    s = load_dataset(name, seed=0)
    train_rows = {row.tobytes() for row in s.x_train}
    for split in ("val", "test"):
        rows = getattr(s, f"x_{split}")
        assert len(rows) > 0
        assert not any(row.tobytes() in train_rows for row in rows), split
    assert s.n_features == 2


@pytest.mark.parametrize("name", DATASETS)
def test_splits_are_stratified(name: str) -> None:
    s = load_dataset(name, seed=0)
    _, y_raw = _raw(name)
    n_classes = int(y_raw.max()) + 1
    assert s.n_classes == n_classes
    whole = np.bincount(y_raw, minlength=n_classes) / len(y_raw)
    for split, (_, y) in _splits(s).items():
        counts = np.bincount(y, minlength=n_classes)
        assert np.all(counts > 0), f"{split}: {counts}"
        # class proportions follow the whole dataset's, up to rounding of a couple of rows
        np.testing.assert_array_less(np.abs(counts - whole * len(y)), 2.0 + 1e-9)


@pytest.mark.parametrize("name", DATASETS)
def test_test_fraction_zero_gives_empty_test_split(name: str) -> None:
    s = load_dataset(name, val_fraction=0.25, test_fraction=0.0, seed=0)
    n = len(_raw(name)[1])
    assert s.x_test.shape == (0, s.n_features)
    assert s.y_test.shape == (0,)
    assert s.x_test.dtype == np.float32 and s.y_test.dtype == np.int64
    assert abs(len(s.y_val) - 0.25 * n) <= 1
    assert len(s.y_train) + len(s.y_val) == n
    data = TensorData.from_splits(s, "cpu")
    assert data.x_test.shape == (0, s.n_features)


def test_unknown_dataset_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="mnist_3d"):
        load_dataset("mnist_3d")


@pytest.mark.parametrize("name", DATASETS)
def test_same_seed_same_split_different_seed_different_split(name: str) -> None:
    a, b, c = load_dataset(name, seed=0), load_dataset(name, seed=0), load_dataset(name, seed=1)
    for field in dataclasses.fields(DataSplits):
        va, vb = getattr(a, field.name), getattr(b, field.name)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb, err_msg=field.name)
        else:
            assert va == vb
    assert a.x_train.shape == c.x_train.shape
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.mean, c.mean)


def test_synthetic_generators_honour_n_samples_and_noise() -> None:
    s = load_dataset("moons", n_samples=200, noise=0.1, seed=5)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 200
    x_raw, _ = _raw("moons", n_samples=200, noise=0.1, seed=5)
    tree = cKDTree((x_raw - s.mean) / s.std)
    dist, _ = tree.query(s.x_val.astype(np.float64))
    assert dist.max() < 1e-4
    blobs = load_dataset("blobs", n_samples=150, noise=1.0, seed=2)
    assert blobs.n_classes == 3
    assert len(blobs.y_train) + len(blobs.y_val) + len(blobs.y_test) == 150


def test_tensor_data_from_splits_keeps_dtypes_and_values() -> None:
    s = load_dataset("wine", seed=0)
    data = TensorData.from_splits(s, "cpu")
    assert data.n_classes == s.n_classes == 3
    assert data.n_features == s.n_features == 13
    for split, (x, y) in _splits(s).items():
        xt, yt = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert xt.dtype == torch.float32 and yt.dtype == torch.int64, split
        assert xt.device.type == "cpu"
        np.testing.assert_array_equal(xt.numpy(), x)
        np.testing.assert_array_equal(yt.numpy(), y)


# --------------------------------------------------------------------------------------
# params.py
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_default_passes_its_own_check(name: str) -> None:
    spec = PARAMS[name]
    assert spec.name == name
    assert spec.check(spec.default) is None
    assert check_param(name, spec.default) is None


def test_choices_are_the_known_optimizers_and_activations() -> None:
    assert PARAMS["optimizer"].choices == OPTIMIZERS
    assert PARAMS["activation"].choices == ACTIVATIONS


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lr", 1e-6),
        ("lr", 10.0),  # closed upper bound
        ("lr", 1),  # ints are numbers too
        ("batch_size", 1),
        ("batch_size", 65536),
        ("batch_size", 64.0),  # an integral float is an integer
        ("momentum", 0.0),
        ("momentum", 0.999),
        ("dropout", 0.0),
        ("weight_decay", 0.0),
        ("weight_decay", 10.0),
        ("hidden_layers", 0),
        ("hidden_layers", 32),
        ("hidden_units", 8192),
        ("optimizer", "nesterov"),
        ("activation", "leaky_relu"),
    ],
)
def test_check_accepts(name: str, value: object) -> None:
    assert check_param(name, value) is None


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("lr", True, "number"),
        ("batch_size", False, "number"),
        ("lr", "0.1", "number"),
        ("lr", None, "number"),
        ("batch_size", 64.5, "integer"),
        ("hidden_layers", 1.000001, "integer"),
        ("lr", math.nan, "finite"),
        ("lr", math.inf, ""),
        ("weight_decay", -math.inf, ""),
        ("dropout", math.nan, "finite"),
        ("batch_size", math.inf, ""),
        ("batch_size", math.nan, ""),
        ("lr", 0.0, "> 0"),  # open lower bound
        ("lr", -1e-9, "> 0"),
        ("lr", 10.000001, "<= 10"),
        ("momentum", 1.0, "< 1"),  # open upper bound
        ("momentum", -0.1, ">= 0"),
        ("dropout", 1.0, "< 1"),
        ("weight_decay", -1e-12, ">= 0"),
        ("batch_size", 0, ">= 1"),
        ("batch_size", 65537, "<= 65536"),
        ("hidden_layers", -1, ">= 0"),
        ("hidden_units", 8193, "<= 8192"),
        ("optimizer", "lbfgs", "one of"),
        ("optimizer", "Adam", "one of"),
        ("optimizer", 1, "one of"),
        ("activation", "gelu", "one of"),
    ],
)
def test_check_rejects(name: str, value: object, fragment: str) -> None:
    error = check_param(name, value)
    assert error is not None
    assert fragment in error


def test_check_param_unknown_name() -> None:
    error = check_param("learning_rate", 0.1)
    assert error is not None and "learning_rate" in error


@pytest.mark.parametrize("name", ["batch_size", "lr"])
def test_check_huge_int_returns_message_not_exception(name: str) -> None:
    error = check_param(name, 10**400)
    assert error is not None


@pytest.mark.parametrize(
    ("spec", "domain"),
    [
        (PARAMS["lr"], "float in (0, 10]"),
        (PARAMS["momentum"], "float in [0, 1)"),
        (PARAMS["batch_size"], "int in [1, 65536]"),
        (ParamSpec("x", "float", 0.0, "h"), "float in [-inf, inf]"),
    ],
)
def test_domain_strings(spec: ParamSpec, domain: str) -> None:
    assert spec.domain() == domain


# --------------------------------------------------------------------------------------
# config.py
# --------------------------------------------------------------------------------------


def test_train_config_has_a_field_with_the_registrys_default_for_every_param() -> None:
    cfg = TrainConfig()
    assert set(PARAMS) <= {f.name for f in dataclasses.fields(TrainConfig)}
    for name, spec in PARAMS.items():
        assert getattr(cfg, name) == spec.default, name
        assert type(getattr(cfg, name)) is type(spec.default), name


def test_from_params_fills_defaults_and_fixed_fields() -> None:
    cfg = TrainConfig.from_params({"lr": 0.05, "optimizer": "sgd"}, max_epochs=7, seed=11)
    assert cfg.lr == 0.05 and cfg.optimizer == "sgd"
    assert cfg.max_epochs == 7 and cfg.seed == 11
    for name, spec in PARAMS.items():
        if name not in ("lr", "optimizer"):
            assert getattr(cfg, name) == spec.default, name
    assert TrainConfig.from_params({}, max_epochs=20) == TrainConfig()


def test_from_params_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_params({"learning_rate": 0.1}, max_epochs=1)
    # max_epochs/seed are not searchable parameters
    with pytest.raises(ValueError, match="max_epochs"):
        TrainConfig.from_params({"max_epochs": 3}, max_epochs=1)


def test_from_params_rejects_illegal_values_naming_each() -> None:
    with pytest.raises(ValueError, match="batch_size") as info:
        TrainConfig.from_params({"batch_size": 0, "dropout": 1.0, "lr": 0.1}, max_epochs=1)
    message = str(info.value)
    assert "dropout" in message
    assert len(message.split("; ")) == 2  # exactly the two illegal values, not lr


@pytest.mark.parametrize("name", ["batch_size", "hidden_layers", "hidden_units"])
def test_from_params_casts_integral_floats_to_int(name: str) -> None:
    cfg = TrainConfig.from_params({name: 64.0 if name != "hidden_layers" else 3.0}, max_epochs=1)
    value = getattr(cfg, name)
    assert type(value) is int
    assert value == (64 if name != "hidden_layers" else 3)
