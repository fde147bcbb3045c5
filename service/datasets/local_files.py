"""Dataset files of the user's on the workers (`dataset.path` with a name that is not built
in): checked against the data roots, then read row by row by `trainer.filedata` (formats:
`trainer.filedata.SUPPORTED`), never copied into the database nor loaded whole.

The service checks the path at submission (422 at `dataset.path` outside the roots) and,
when the file is visible on the API host too, its headers (format, shape, dtype); workers
check the path again before opening anything and vet every opened file descriptor
(`DataPlaces.check_opened`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from service.core.errors import InvalidInput
from service.datasets.locations import DataPlaces
from service.datasets.spec import DatasetSpec
from trainer.data import TensorData
from trainer.filedata import DataFileError, check_arrays, load_file_data, locate_arrays


def file_identity(path: Path) -> str:
    """Size, modification time and inode of a dataset file (or of a folder's x.npy/y.npy):
    a file replaced or rewritten gets another identity. Empty if it does not exist."""
    parts = [path, path / "x.npy", path / "y.npy"] if path.is_dir() else [path]
    stamps = []
    for p in parts:
        try:
            st = os.stat(p)
        except OSError:
            continue
        stamps.append(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return "|".join(stamps)


def load_file_dataset(
    path: Path, ds: DatasetSpec, device: str | torch.device, places: DataPlaces
) -> TensorData:
    """The splits of the dataset file at `path` (resolved and inside the roots), x read on
    demand."""
    if ds.shape == "image":
        x, _ = locate_arrays(path, places.check_opened)
        if len(x.shape) != 4:
            raise DataFileError(f"dataset.shape: image needs x of n x C x H x W, got {x.shape}")
    return load_file_data(
        path,
        val_fraction=ds.val_fraction,
        test_fraction=ds.test_fraction,
        seed=ds.seed,
        device=device,
        flat=ds.shape == "flat",
        check=places.check_opened,
    )


def check_file_dataset(places: DataPlaces, ds: DatasetSpec) -> None:
    """At submission: the path lies inside the roots (else 422 at `dataset.path`) and, when
    the API host sees the file, its format and headers fit (else 422 at `dataset.path`
    saying why). A file the API host does not see is checked by the workers."""
    path = places.file(ds)
    if path is None or not path.exists():
        return
    try:
        x, y = locate_arrays(path, places.check_opened)
        check_arrays(x, y)
        if ds.shape == "image" and len(x.shape) != 4:
            raise DataFileError(f"dataset.shape: image needs x of n x C x H x W, got {x.shape}")
    except DataFileError as e:
        raise InvalidInput(str(e), field="dataset.path", value=ds.path) from e
