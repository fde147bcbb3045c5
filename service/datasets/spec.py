"""The dataset part of a study spec: which data a study trains on and how it is split."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from service.core.types import Seed, ShortName, Strict
from trainer.data import DATASET_NAMES, is_image
from trainer.images import IMAGE_DATASETS

# (rows, classes) of the built-in datasets that do not depend on `n_samples`; image datasets
# pool their official train and test files.
BUILTIN_ROWS: dict[str, tuple[int, int]] = {
    "digits": (1797, 10),
    "breast_cancer": (569, 2),
    "wine": (178, 3),
    "mnist": (70_000, 10),
    "fashion_mnist": (70_000, 10),
    "cifar10": (60_000, 10),
}
SYNTHETIC_CLASSES = {"moons": 2, "blobs": 3}


def split_problem(
    n_rows: int, n_classes: int, val_fraction: float, test_fraction: float
) -> tuple[str, str] | None:
    """(field, reason) when the stratified splits of `trainer.data.split_and_standardize`
    (scikit-learn's arithmetic: a split of fraction f of n rows takes ceil(f·n)) would leave
    a split with fewer rows than classes, which scikit-learn refuses; None when they do not."""
    rest = n_rows
    if test_fraction > 0:
        n_test = math.ceil(test_fraction * n_rows)
        rest = n_rows - n_test
        if n_test < n_classes:
            return "test_fraction", _too_few("test", n_test, n_rows, n_classes)
    n_val = math.ceil(val_fraction / (1.0 - test_fraction) * rest)
    if n_val < n_classes:
        return "val_fraction", _too_few("validation", n_val, n_rows, n_classes)
    if rest - n_val < n_classes:
        return "val_fraction", _too_few("training", rest - n_val, n_rows, n_classes)
    return None


def _too_few(split: str, n: int, n_rows: int, n_classes: int) -> str:
    return (
        f"leaves {n} {split} rows of {n_rows}; each split needs at least one row per class "
        f"({n_classes})"
    )


class DatasetSpec(Strict):
    name: ShortName = Field(
        description=f"built-in: {', '.join(DATASET_NAMES)}, or an uploaded dataset's name",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    seed: Seed = 0
    n_samples: int = Field(1000, ge=20, le=1_000_000, description="synthetic datasets only")
    noise: float = Field(0.2, ge=0, le=100, description="synthetic datasets only")
    shape: Literal["flat", "image"] | None = Field(
        None, description="flat (n, features) or image (n, c, h, w); default: the dataset's own"
    )
    path: str | None = Field(
        None, description="image datasets: their folder on the worker (default $HPO_DATA_DIR/name)"
    )
    download: bool = Field(
        False, description="image datasets: workers fetch missing files (needs network access)"
    )

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        # Other names are uploaded datasets, looked up in the database at submission.
        builtin = self.name in DATASET_NAMES
        if builtin and self.shape == "image" and not is_image(self.name, self.shape):
            raise ValueError(f"shape: {self.name!r} is tabular; only digits can be read as images")
        if self.path is not None and self.name not in IMAGE_DATASETS:
            raise ValueError(
                f"path: only image datasets {list(IMAGE_DATASETS)} are read from files"
            )
        if self.download and self.name not in IMAGE_DATASETS:
            raise ValueError(f"download: only image datasets {list(IMAGE_DATASETS)} are fetched")
        if self.val_fraction + self.test_fraction > 0.8:
            raise ValueError(
                "val_fraction + test_fraction must leave at least 20% of the rows for training"
            )
        size = self.builtin_size()
        if size is not None and (
            problem := split_problem(*size, self.val_fraction, self.test_fraction)
        ):
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return self

    def builtin_size(self) -> tuple[int, int] | None:
        """(rows, classes) of a built-in dataset; None for an uploaded one."""
        if self.name in SYNTHETIC_CLASSES:
            return self.n_samples, SYNTHETIC_CLASSES[self.name]
        return BUILTIN_ROWS.get(self.name)
