"""Built-in datasets, train/val/test splits and standardization.

Small datasets live on the device as tensors (see `TensorData`); the trainer slices batches
out of them with a permutation instead of a DataLoader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn import datasets as skdata
from sklearn.model_selection import train_test_split

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]


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


# name -> (loader, synthetic?)
BUILTIN: dict[str, tuple[Callable[[int, float, int], tuple[FloatArray, IntArray]], bool]] = {
    "digits": (_digits, False),
    "breast_cancer": (_breast_cancer, False),
    "wine": (_wine, False),
    "moons": (_moons, True),
    "blobs": (_blobs, True),
}


@dataclass(frozen=True)
class DataSplits:
    """Standardized splits as numpy arrays; mean/std come from the training split only."""

    x_train: FloatArray
    y_train: IntArray
    x_val: FloatArray
    y_val: IntArray
    x_test: FloatArray
    y_test: IntArray
    mean: FloatArray
    std: FloatArray
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def load_dataset(
    name: str,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    n_samples: int = 1000,
    noise: float = 0.2,
) -> DataSplits:
    if name not in BUILTIN:
        raise ValueError(f"unknown dataset {name!r}; built-in: {sorted(BUILTIN)}")
    loader, _ = BUILTIN[name]
    x, y = loader(n_samples, noise, seed)
    return split_and_standardize(
        x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )


def split_and_standardize(
    x: FloatArray,
    y: IntArray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> DataSplits:
    """Stratified train/val/test split, then x <- (x - mu) / sigma with training statistics."""
    x_rest, x_test, y_rest, y_test = (x, x[:0], y, y[:0])
    if test_fraction > 0:
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=test_fraction, random_state=seed, stratify=y
        )
    # val_fraction is a fraction of the whole dataset, not of what remains after the test split.
    val_of_rest = val_fraction / (1.0 - test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_of_rest, random_state=seed, stratify=y_rest
    )
    mean = x_train.mean(axis=0).astype(np.float32)
    std = x_train.std(axis=0).astype(np.float32)
    std[std == 0] = 1.0  # constant features (e.g. digits' border pixels) stay centred at 0

    def norm(a: FloatArray) -> FloatArray:
        out: FloatArray = ((a - mean) / std).astype(np.float32)
        return out

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
    )


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

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

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
        )
