"""The dataset part of a study spec: which data a study trains on and how it is split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from service.core.errors import FieldProblem, located
from service.core.types import Seed, ShortName, Strict
from trainer.data import BUILTIN_REGRESSION, DATASET_NAMES, Task, builtin_task, is_image
from trainer.images import IMAGE_DATASETS


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
        None,
        description="image datasets: their folder on the worker (default $HPO_DATA_DIR/name; "
        "relative: under HPO_DATA_DIR), inside HPO_DATA_DIR or a folder of HPO_DATA_ROOTS",
    )
    task: Task | None = Field(
        None,
        description="classification or regression; default: inferred (built-ins: their own; "
        "uploads: a float target with a non-integer value or more than 20 distinct values is "
        "regression)",
    )
    download: bool = Field(
        False,
        description="image datasets: workers fetch missing files into that folder (needs "
        "network access and HPO_ALLOW_DOWNLOADS)",
    )

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        # Other names are uploaded datasets, looked up in the database at submission.
        # Each problem is located at the field it blames (core.errors.located).
        errors: list[FieldProblem] = []
        builtin = self.name in DATASET_NAMES
        if builtin and self.shape == "image" and not is_image(self.name, self.shape):
            why = f"{self.name!r} is tabular; only digits can be read as images"
            errors.append(FieldProblem(("shape",), why, self.shape))
        if self.path is not None and self.name not in IMAGE_DATASETS:
            why = f"only image datasets {list(IMAGE_DATASETS)} are read from files"
            errors.append(FieldProblem(("path",), why, self.path))
        if self.download and self.name not in IMAGE_DATASETS:
            why = f"only image datasets {list(IMAGE_DATASETS)} are fetched"
            errors.append(FieldProblem(("download",), why, self.download))
        if self.task == "classification" and self.name in BUILTIN_REGRESSION:
            why = f"{self.name!r} has a continuous target; it can only be regression"
            errors.append(FieldProblem(("task",), why, self.task))
        if self.task == "regression" and self.name in IMAGE_DATASETS:
            why = f"{self.name!r} holds class labels; image datasets are classification"
            errors.append(FieldProblem(("task",), why, self.task))
        # Only what no dataset could train on; whether the splits of this dataset's rows
        # hold every class is checked where its rows are known (datasets.splits).
        if self.val_fraction + self.test_fraction >= 1:
            why = "val_fraction + test_fraction must be < 1, to leave rows for training"
            errors.append(FieldProblem(("val_fraction",), why, self.val_fraction))
        if errors:
            raise located("DatasetSpec", errors)
        return self

    @property
    def builtin_task(self) -> Task | None:
        """The task when it is known without the database: stated, or a built-in's own;
        None for an uploaded dataset whose task was not stated (see datasets.tasks)."""
        if self.task is not None:
            return self.task
        return builtin_task(self.name) if self.name in DATASET_NAMES else None
