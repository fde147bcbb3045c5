"""The worker's dataset cache: a dataset is loaded onto the device once per process and
reused by every trial (and learning-curve job) that names it."""

from __future__ import annotations

import json
from pathlib import Path

from service.datasets.locations import DataPlaces
from service.datasets.spec import DatasetSpec
from service.datasets.splits import load_uploaded_splits, uploaded_dataset_hash
from trainer import DataSplits, TensorData, load_dataset

DATA_CACHE_SIZE = 4  # datasets kept on the device per worker process


class DatasetCache:
    """Up to `size` datasets as device tensors, the oldest evicted first.

    The key is the dataset spec plus, for an uploaded dataset, its content hash, so that a
    re-upload under the same name is loaded again. `places`: the data directory (which also
    holds the cache of uploaded datasets) and the roots image datasets may be read from.
    """

    def __init__(
        self, url: str, device: str, places: DataPlaces, size: int = DATA_CACHE_SIZE
    ) -> None:
        self.url = url
        self.device = device
        self.places = places
        self.size = size
        self._data: dict[str, TensorData] = {}

    def get(self, ds: DatasetSpec) -> TensorData:
        """The train/val/test splits of `ds` on the device, loaded on first use.

        Raises `DataPlaceRefused` for a folder outside this worker's data roots (or a download
        it does not allow), checked before any file is opened, even for a cached dataset; and
        what loading raises (unknown dataset, missing file, bad upload).
        """
        folder = self.places.folder(ds)  # resolved: image files are read (or fetched) right there
        uploaded = uploaded_dataset_hash(self.url, ds)  # None for a built-in dataset
        key = json.dumps(ds.model_dump(), sort_keys=True) + (uploaded or "")
        if key not in self._data:
            if len(self._data) >= self.size:
                self._data.pop(next(iter(self._data)))
            self._data[key] = TensorData.from_splits(self._load(ds, uploaded, folder), self.device)
        return self._data[key]

    def _load(self, ds: DatasetSpec, uploaded: str | None, folder: Path | None) -> DataSplits:
        if uploaded is not None:
            return load_uploaded_splits(self.url, uploaded, ds, self.places.data_dir)
        return load_dataset(
            ds.name,
            val_fraction=ds.val_fraction,
            test_fraction=ds.test_fraction,
            seed=ds.seed,
            n_samples=ds.n_samples,
            noise=ds.noise,
            shape=ds.shape,
            path=None if folder is None else str(folder),
            download=ds.download,
            task=ds.task,
        )
