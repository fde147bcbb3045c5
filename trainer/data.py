"""Built-in datasets, train/val/test splits and standardization.

Small datasets live on the device as tensors (see `TensorData`); the trainer slices batches
out of them with a permutation instead of a DataLoader.

Samples may have any shape: tabular (n, features), signals (n, length) or (n, channels,
length), images (n, c, h, w). Standardization keeps the shape. Tabular data is standardized
per feature; images per channel (statistics over all pixels of a channel), because
per-pixel statistics explode on near-constant border pixels and augmentation moves
pixels across positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn import datasets as skdata
from sklearn.model_selection import train_test_split

from trainer.images import IMAGE_DATASETS, load_image_dataset

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]
# Targets: class indices (int64) for classification, values (float32) for regression.
TargetArray = NDArray[Any]
Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")
# A floating-point target with more distinct values than this is regression (see infer_task).
MAX_CLASS_VALUES = 20


def _digits(n_samples: int, noise: float, seed: int) -> tuple[FloatArray, IntArray]:
    x, y = skdata.load_digits(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def _breast_cancer(n_samples: int, noise: float, seed: int) -> tuple[FloatArray, IntArray]:
    x, y = skdata.load_breast_cancer(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def _wine(n_samples: int, noise: float, seed: int) -> tuple[FloatArray, IntArray]:
    x, y = skdata.load_wine(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def _moons(n_samples: int, noise: float, seed: int) -> tuple[FloatArray, IntArray]:
    x, y = skdata.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64)


def _blobs(n_samples: int, noise: float, seed: int) -> tuple[FloatArray, IntArray]:
    # `noise` is the clusters' standard deviation; 3 centers in 2-D.
    x, y = skdata.make_blobs(n_samples=n_samples, centers=3, cluster_std=noise, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64)


def _diabetes(n_samples: int, noise: float, seed: int) -> tuple[FloatArray, FloatArray]:
    # 442 patients, 10 features, target: disease progression one year later (25..346).
    x, y = skdata.load_diabetes(return_X_y=True)
    return x.astype(np.float32), y.astype(np.float32)


def _friedman1(n_samples: int, noise: float, seed: int) -> tuple[FloatArray, FloatArray]:
    # y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + N(0, noise^2); x in U[0, 1]^10
    # (Friedman 1991, "Multivariate adaptive regression splines"); x6..x10 are irrelevant.
    x, y = skdata.make_friedman1(n_samples=n_samples, n_features=10, noise=noise, random_state=seed)
    return x.astype(np.float32), y.astype(np.float32)


Loader = Callable[[int, float, int], tuple[FloatArray, TargetArray]]
# name -> (loader, synthetic?)
BUILTIN: dict[str, tuple[Loader, bool]] = {
    "digits": (_digits, False),
    "breast_cancer": (_breast_cancer, False),
    "wine": (_wine, False),
    "moons": (_moons, True),
    "blobs": (_blobs, True),
    "diabetes": (_diabetes, False),
    "friedman1": (_friedman1, True),
}
# The task of each built-in dataset that is not classification.
BUILTIN_REGRESSION = frozenset({"diabetes", "friedman1"})


def builtin_task(name: str) -> Task:
    """The task of a built-in (or image) dataset."""
    return "regression" if name in BUILTIN_REGRESSION else "classification"


def infer_task(y: NDArray[Any]) -> Task:
    """Regression when the target is floating-point and has a non-integer value or more than
    MAX_CLASS_VALUES distinct values; classification otherwise (integer, boolean or text
    labels, and floats such as 0.0/1.0 that only encode a few classes)."""
    if not np.issubdtype(y.dtype, np.floating) or y.size == 0:
        return "classification"
    finite = y[np.isfinite(y)]
    if np.any(finite != np.round(finite)):
        return "regression"
    return "regression" if len(np.unique(finite)) > MAX_CLASS_VALUES else "classification"


# Every dataset name a spec may use: the bundled ones, then image files from a local folder.
DATASET_NAMES = (*BUILTIN, *IMAGE_DATASETS)

Shape = Literal["flat", "image"]
DataLayout = Literal["tabular", "signal", "image"]
DIGITS_IMAGE = (1, 8, 8)


def is_image(name: str, shape: Shape | None) -> bool:
    """Whether the dataset arrives as images (n, c, h, w) for this `shape` option."""
    if name in IMAGE_DATASETS:
        return shape != "flat"
    return name == "digits" and shape == "image"


@dataclass(frozen=True)
class DataSplits:
    """Standardized splits as numpy arrays; mean/std come from the training split only.

    Classification: y are class indices (int64) and `n_classes` the number of classes.
    Regression: y are float32 targets standardized as (y - target_mean) / target_std with
    the training split's statistics, and `n_classes` is 1, the network's one output.
    """

    x_train: FloatArray
    y_train: TargetArray
    x_val: FloatArray
    y_val: TargetArray
    x_test: FloatArray
    y_test: TargetArray
    mean: FloatArray
    std: FloatArray
    n_classes: int
    layout: DataLayout = "tabular"
    task: Task = "classification"
    target_mean: float = 0.0
    target_std: float = 1.0

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))


def load_dataset(
    name: str,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    n_samples: int = 1000,
    noise: float = 0.2,
    shape: Shape | None = None,
    path: str | None = None,
    download: bool = False,
    task: Task | None = None,
) -> DataSplits:
    """Load, split and standardize a dataset.

    `shape`: "flat" gives (n, features); "image" gives (n, c, h, w) (digits: 1x8x8).
    None is the dataset's natural shape: images for mnist, fashion_mnist and cifar10, flat
    for the rest. `path`: the folder of an image dataset (default $HPO_DATA_DIR/<name>);
    `download`: fetch its missing files first (networked nodes only; opt-in).
    `task`: classification or regression; None is the dataset's own (`builtin_task`).
    """
    if name in IMAGE_DATASETS:
        x, y = load_image_dataset(name, path, download=download)
    elif name in BUILTIN:
        if shape == "image" and name != "digits":
            raise ValueError(f"shape: {name!r} is tabular; only digits can be read as images")
        loader, _ = BUILTIN[name]
        x, y = loader(n_samples, noise, seed)
        if shape == "image":
            x = x.reshape(-1, *DIGITS_IMAGE)
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {list(DATASET_NAMES)}")
    image = x.ndim == 4
    splits = split_and_standardize(
        x,
        y,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        per_channel=image,
        task=builtin_task(name) if task is None else task,
    )
    if image and shape == "flat":
        return flatten_splits(splits)
    return splits


def flatten_splits(s: DataSplits) -> DataSplits:
    """Samples reshaped to (n, features); statistics broadcast to the flat layout."""

    def flat(a: FloatArray) -> FloatArray:
        return a.reshape(a.shape[0], -1)

    shape = s.x_train.shape[1:]
    return DataSplits(
        x_train=flat(s.x_train),
        y_train=s.y_train,
        x_val=flat(s.x_val),
        y_val=s.y_val,
        x_test=flat(s.x_test),
        y_test=s.y_test,
        mean=np.broadcast_to(s.mean, shape).reshape(-1).astype(np.float32),
        std=np.broadcast_to(s.std, shape).reshape(-1).astype(np.float32),
        n_classes=s.n_classes,
        layout="tabular",
        task=s.task,
        target_mean=s.target_mean,
        target_std=s.target_std,
    )


SplitName = Literal["training", "validation", "test"]
# A regression split needs 2 rows: a mean and a spread (standardization, R²).
MIN_REGRESSION_ROWS = 2


class SplitError(ValueError):
    """A split that could not train or evaluate; `problems` are (split, sentence) pairs."""

    def __init__(self, problems: list[tuple[SplitName | None, str]]) -> None:
        super().__init__("; ".join(sentence for _, sentence in problems))
        self.problems = problems


def split_sizes(n: int, *, val_fraction: float, test_fraction: float) -> dict[SplitName, int]:
    """Rows of each split of n rows, as `split_indices` (scikit-learn) rounds them: the test
    split takes ceil(test_fraction·n), validation ceil of its share of the rest."""
    n_test = math.ceil(test_fraction * n) if test_fraction > 0 else 0
    rest = n - n_test
    n_val = math.ceil(val_fraction / (1.0 - test_fraction) * rest)
    return {"training": rest - n_val, "validation": n_val, "test": n_test}


def split_size_problems(
    n: int,
    n_classes: int,
    *,
    val_fraction: float,
    test_fraction: float,
    task: Task = "classification",
) -> list[tuple[SplitName | None, str]]:
    """Splits of n rows too small to hold one row of each of `n_classes` classes, or for
    regression fewer than 2 rows (`n_classes` is then ignored); a test split of 0 rows,
    test_fraction 0, is no split and fine."""
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        return [(None, "val_fraction + test_fraction must leave rows for training")]
    sizes = split_sizes(n, val_fraction=val_fraction, test_fraction=test_fraction)
    need = MIN_REGRESSION_ROWS if task == "regression" else n_classes
    why = (
        f"a regression split needs at least {need} rows"
        if task == "regression"
        else f"fewer than the {n_classes} classes, and every split needs each class"
    )
    return [
        (split, f"the {split} split would have {size} of the {n} rows, {why}")
        for split, size in sizes.items()
        if size < need and not (split == "test" and test_fraction == 0)
    ]


def split_indices(
    y: TargetArray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    task: Task = "classification",
) -> tuple[IntArray, IntArray, IntArray]:
    """Row indices of the train, validation and test splits of targets y (n,): stratified by
    class for classification, plain random for regression.

    `val_fraction` and `test_fraction` are fractions of all n rows; test_fraction 0 gives
    an empty test split. Raises `SplitError` naming the split when one has fewer rows than
    there are classes or misses a class (regression: fewer than 2 rows, which no
    standardization or R² can be computed from).
    """
    if task == "regression":
        return _random_split(
            len(y), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    classes, counts = np.unique(y, return_counts=True)
    n_splits = 3 if test_fraction > 0 else 2
    problems = split_size_problems(
        len(y), len(classes), val_fraction=val_fraction, test_fraction=test_fraction
    )
    problems += [
        (None, f"class {c} has {k} row{'s' if k > 1 else ''}, fewer than the {n_splits} splits")
        for c, k in zip(classes.tolist(), counts.tolist(), strict=True)
        if k < n_splits
    ]
    if problems:
        raise SplitError(problems)
    rows = np.arange(len(y))
    try:
        i_rest, i_test = rows, rows[:0]
        if test_fraction > 0:
            i_rest, i_test = train_test_split(
                rows, test_size=test_fraction, random_state=seed, stratify=y
            )
        # val_fraction is a fraction of all rows, not of what remains after the test split.
        val_of_rest = val_fraction / (1.0 - test_fraction)
        i_train, i_val = train_test_split(
            i_rest, test_size=val_of_rest, random_state=seed, stratify=y[i_rest]
        )
    except ValueError as e:  # scikit-learn cannot stratify what is left after the test split
        raise SplitError([(None, f"cannot split the rows by class: {e}")]) from e
    splits: dict[SplitName, IntArray] = {"training": i_train, "validation": i_val, "test": i_test}
    missing: list[tuple[SplitName | None, str]] = [
        (split, f"the {split} split ({len(idx)} rows) has no row of class {c}")
        for split, idx in splits.items()
        if split != "test" or test_fraction > 0
        for c in np.setdiff1d(classes, y[idx]).tolist()
    ]
    if missing:
        raise SplitError(missing)
    return i_train, i_val, i_test


def _random_split(
    n: int, *, val_fraction: float, test_fraction: float, seed: int
) -> tuple[IntArray, IntArray, IntArray]:
    """Unstratified train/val/test row indices (regression), sized as `split_sizes`."""
    problems = split_size_problems(
        n, 0, val_fraction=val_fraction, test_fraction=test_fraction, task="regression"
    )
    if problems:
        raise SplitError(problems)
    rows = np.arange(n)
    i_rest, i_test = rows, rows[:0]
    if test_fraction > 0:
        i_rest, i_test = train_test_split(rows, test_size=test_fraction, random_state=seed)
    val_of_rest = val_fraction / (1.0 - test_fraction)
    i_train, i_val = train_test_split(i_rest, test_size=val_of_rest, random_state=seed)
    return i_train, i_val, i_test


def split_and_standardize(
    x: FloatArray,
    y: TargetArray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    per_channel: bool = False,
    task: Task = "classification",
) -> DataSplits:
    """Train/val/test split (stratified for classification), then x <- (x - mu) / sigma with
    training statistics; for regression also y <- (y - mu_y) / sigma_y (training split).

    x is (n, *sample_shape). mu and sigma have the sample's shape (per feature), or with
    `per_channel` the shape (c, 1, ..., 1): one value per channel of (n, c, *spatial).
    Raises `SplitError` when a split could not train or evaluate (see `split_indices`).
    """
    i_train, i_val, i_test = split_indices(
        y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, task=task
    )
    x_train, x_val, x_test = x[i_train], x[i_val], x[i_test]
    y_train, y_val, y_test = y[i_train], y[i_val], y[i_test]
    # float64 accumulation: float32 sums over millions of pixels lose digits
    if per_channel:  # x is (n, c, *spatial): reduce over n and the spatial axes
        axes = (0, *range(2, x.ndim))
        mean = x_train.mean(axis=axes, dtype=np.float64, keepdims=True)[0].astype(np.float32)
        std = x_train.std(axis=axes, dtype=np.float64, keepdims=True)[0].astype(np.float32)
    else:
        mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = x_train.std(axis=0, dtype=np.float64).astype(np.float32)
    std[std == 0] = 1.0  # constant features (e.g. digits' border pixels) stay centred at 0

    def norm(a: FloatArray) -> FloatArray:
        out: FloatArray = ((a - mean) / std).astype(np.float32)
        return out

    layout = sample_layout(x.shape[1:])
    if task == "regression":
        y_mean = float(y_train.mean(dtype=np.float64))
        y_std = float(y_train.std(dtype=np.float64)) or 1.0

        def norm_y(a: TargetArray) -> FloatArray:
            out: FloatArray = ((a.astype(np.float64) - y_mean) / y_std).astype(np.float32)
            return out

        return DataSplits(
            x_train=norm(x_train),
            y_train=norm_y(y_train),
            x_val=norm(x_val),
            y_val=norm_y(y_val),
            x_test=norm(x_test),
            y_test=norm_y(y_test),
            mean=mean,
            std=std,
            n_classes=1,
            layout=layout,
            task="regression",
            target_mean=y_mean,
            target_std=y_std,
        )
    return DataSplits(
        x_train=norm(x_train),
        y_train=y_train,
        x_val=norm(x_val),
        y_val=y_val,
        x_test=norm(x_test),
        y_test=y_test,
        mean=mean,
        std=std,
        n_classes=int(y.max()) + 1,
        layout=layout,
    )


def sample_layout(sample_shape: tuple[int, ...]) -> DataLayout:
    """(features,) is tabular, (c, h, w) an image; (c, length) a multichannel signal."""
    if len(sample_shape) == 3:
        return "image"
    return "signal" if len(sample_shape) == 2 else "tabular"


@dataclass(frozen=True)
class TensorData:
    """The splits as tensors on one device, loaded once and reused by every trial."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    layout: DataLayout = "tabular"
    task: Task = "classification"
    target_mean: float = 0.0  # regression: y was standardized with these (training split)
    target_std: float = 1.0

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @classmethod
    def from_splits(cls, splits: DataSplits, device: str | torch.device) -> TensorData:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(device)

        return cls(
            x_train=t(splits.x_train),
            y_train=t(splits.y_train),
            x_val=t(splits.x_val),
            y_val=t(splits.y_val),
            x_test=t(splits.x_test),
            y_test=t(splits.y_test),
            n_classes=splits.n_classes,
            layout=splits.layout,
            task=splits.task,
            target_mean=splits.target_mean,
            target_std=splits.target_std,
        )
