"""Uploaded datasets for workers: a spec's dataset name -> the trainer's splits."""

from __future__ import annotations

from pathlib import Path

from service.datasets.service import load_arrays, resolve
from service.datasets.spec import DatasetSpec
from trainer.data import DATASET_NAMES, DataSplits, flatten_splits, split_and_standardize

CACHE_SUBDIR = "dataset-cache"


def uploaded_dataset_hash(url: str, ds: DatasetSpec) -> str | None:
    """The content hash the name points at now, or None for a built-in dataset."""
    return None if ds.name in DATASET_NAMES else resolve(url, ds.name)


def load_uploaded_splits(url: str, sha: str, ds: DatasetSpec, data_dir: Path) -> DataSplits:
    """X keeps its uploaded shape: (n, d) tabular, (n, C, L) signals, (n, C, H, W) images
    (standardized per channel); `dataset.shape: flat` flattens it."""
    x, y = load_arrays(url, sha, data_dir / CACHE_SUBDIR)
    if ds.shape == "image" and x.ndim != 4:
        raise ValueError(f"dataset.shape: image needs X of n x C x H x W, got {x.shape}")
    splits = split_and_standardize(
        x,
        y,
        val_fraction=ds.val_fraction,
        test_fraction=ds.test_fraction,
        seed=ds.seed,
        per_channel=x.ndim == 4,
    )
    return flatten_splits(splits) if ds.shape == "flat" and x.ndim > 2 else splits
