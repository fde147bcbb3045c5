"""Datasets as train/validation/test splits: an uploaded dataset for workers, and the
submission's check that a spec's fractions split its dataset into splits that can train and
evaluate."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.errors import InvalidInput
from service.datasets.service import get_row, load_arrays, resolve
from service.datasets.spec import DatasetSpec
from trainer.data import (
    BUILTIN,
    DATASET_NAMES,
    DataSplits,
    IntArray,
    SplitError,
    SplitName,
    Task,
    flatten_splits,
    split_and_standardize,
    split_indices,
    split_size_problems,
    split_sizes,
)

CACHE_SUBDIR = "dataset-cache"

# Which fraction a split's problem is answered at: training gets what the others leave.
SPLIT_FIELDS: dict[SplitName | None, str] = {
    "training": "dataset.val_fraction",
    "validation": "dataset.val_fraction",
    "test": "dataset.test_fraction",
    None: "dataset",
}


def uploaded_dataset_hash(url: str, ds: DatasetSpec) -> str | None:
    """The content hash the name points at now, or None for a built-in dataset."""
    return None if ds.name in DATASET_NAMES else resolve(url, ds.name)


def load_uploaded_splits(url: str, sha: str, ds: DatasetSpec, data_dir: Path) -> DataSplits:
    """X keeps its uploaded shape: (n, d) tabular, (n, C, L) signals, (n, C, H, W) images
    (standardized per channel); `dataset.shape: flat` flattens it. The task is the upload's
    (float targets are regression) unless `dataset.task` says otherwise: regression on a
    classification upload regresses on its numeric labels. Raises `SplitError` when a split
    could not train or evaluate, ValueError for labels that are not numbers."""
    x, y = load_arrays(url, sha, data_dir / CACHE_SUBDIR)
    stored: Task = "regression" if y.dtype.kind == "f" else "classification"
    task = ds.task or stored
    if task == "regression" and stored == "classification":
        with session_scope(url) as session:
            y = regression_targets(get_row(session, ds.name).classes, y)
    elif task == "classification" and stored == "regression":
        raise ValueError(f"dataset {ds.name!r} holds continuous targets; it is regression")
    if ds.shape == "image" and x.ndim != 4:
        raise ValueError(f"dataset.shape: image needs X of n x C x H x W, got {x.shape}")
    splits = split_and_standardize(
        x,
        y,
        val_fraction=ds.val_fraction,
        test_fraction=ds.test_fraction,
        seed=ds.seed,
        per_channel=x.ndim == 4,
        task=task,
    )
    return flatten_splits(splits) if ds.shape == "flat" and x.ndim > 2 else splits


def regression_targets(classes: list[str], index: IntArray) -> NDArray[np.float32]:
    """The numeric values of a classification upload's labels, per row (`dataset.task:
    regression` on labels such as ratings 1..5). Raises ValueError for a label that is not a
    number."""
    try:
        values = np.array([float(c) for c in classes], dtype=np.float32)
    except ValueError as e:
        raise ValueError(f"dataset.task: regression needs numeric labels; {e}") from e
    out: NDArray[np.float32] = values[index]
    return out


@lru_cache(maxsize=4)  # at most 4 x 8 MB of labels (n_samples <= 1e6)
def _builtin_labels(name: str, n_samples: int, noise: float, seed: int) -> NDArray[Any]:
    loader, _ = BUILTIN[name]
    return loader(n_samples, noise, seed)[1]


def surely_in_every_split(labels: IntArray, ds: DatasetSpec) -> bool:
    """Whether stratification must put every class in every split, from counts alone.

    scikit-learn's stratified split gives class i of a split of s rows its share s·c_i/n,
    rounded down or up by one, and does so twice (test, then validation of the rest), so
    each class has at least s·c_i/n - 2 rows in each split: at least one when s·c_i > 3n.
    This skips the exact split (1.3 s for a million rows) when the answer is plain.
    """
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    n = len(labels)
    sizes = split_sizes(n, val_fraction=ds.val_fraction, test_fraction=ds.test_fraction)
    smallest = [size for split, size in sizes.items() if split != "test" or size > 0]
    return min(smallest) * int(counts.min()) > 3 * n


def check_split(session: Session, ds: DatasetSpec) -> None:
    """Refuse fractions that leave a split unable to train or evaluate: fewer rows than
    classes, or (where the labels are known here) a class missing from a split.

    Built-in tabular datasets are split exactly as a worker splits them; an uploaded one is
    checked by its row and class counts (its labels stay in the database; a class missing
    from a split then fails the trial with the reason); image datasets live on the workers
    and are checked there. Raises `InvalidInput` at `dataset.val_fraction`,
    `dataset.test_fraction` or `dataset`.
    """
    try:
        if ds.name in BUILTIN and ds.builtin_task == "regression":
            # Not stratified: only the split sizes matter (each needs 2 rows).
            n = len(_builtin_labels(ds.name, ds.n_samples, ds.noise, ds.seed))
            problems = split_size_problems(
                n,
                0,
                val_fraction=ds.val_fraction,
                test_fraction=ds.test_fraction,
                task="regression",
            )
            if problems:
                raise SplitError(problems)
        elif ds.name in BUILTIN:
            labels = _builtin_labels(ds.name, ds.n_samples, ds.noise, ds.seed)
            if not surely_in_every_split(labels, ds):
                split_indices(
                    labels,
                    val_fraction=ds.val_fraction,
                    test_fraction=ds.test_fraction,
                    seed=ds.seed,
                )
        elif ds.name not in DATASET_NAMES:
            row = get_row(session, ds.name)
            problems = split_size_problems(
                row.n_rows,
                row.n_classes,
                val_fraction=ds.val_fraction,
                test_fraction=ds.test_fraction,
                task="regression" if (ds.task or row.task) == "regression" else "classification",
            )
            if problems:
                raise SplitError(problems)
    except SplitError as e:
        synthetic = ds.name in BUILTIN and BUILTIN[ds.name][1]
        hint = " (raise dataset.n_samples, or change the fractions)" if synthetic else ""
        values = {
            "dataset.val_fraction": ds.val_fraction,
            "dataset.test_fraction": ds.test_fraction,
        }
        refused = [
            InvalidInput(
                f"dataset {ds.name!r}: {sentence}{hint}",
                field=SPLIT_FIELDS[split],
                value=values.get(SPLIT_FIELDS[split]),
            )
            for split, sentence in e.problems
        ]
        raise InvalidInput(refused[0].reason, field=refused[0].field, also=refused[1:]) from e
