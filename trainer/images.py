"""Image datasets in their standard file formats, read from a local folder.

- MNIST and Fashion-MNIST: IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`), gzipped (`.gz`) or not.
- CIFAR-10: the "python version" batches (`data_batch_1` ... `data_batch_5`, `test_batch`),
  which are Python pickles. They are read only from the user's own folder, and with an
  unpickler that refuses every class except the numpy array reconstruction these files
  need, so a crafted file cannot run code.

The folder is the dataset's `path` option, else `$HPO_DATA_DIR/<name>` (default
`./hpo-data/<name>`); torchvision's layouts (`<folder>/MNIST/raw`,
`<folder>/cifar-10-batches-py`) are found too. Official train and test files are
concatenated; the trainer makes its own stratified train/val/test split.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from trainer.download import download_dataset

IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# dataset name -> folder names torchvision uses under its root
IDX_SUBDIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")


def data_dir() -> Path:
    return Path(os.environ.get("HPO_DATA_DIR", "./hpo-data"))


def dataset_folder(name: str, path: str | None) -> Path:
    return Path(path).expanduser() if path else data_dir() / name


def _open(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: Path) -> NDArray[Any]:
    """An IDX file (gzipped or not) as an array of its declared shape and type."""
    raw = _open(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX header declares shape {dims} ({count * dtype.itemsize} bytes of data) "
            f"but the file holds {len(raw) - header}"
        )
    data: NDArray[Any] = np.frombuffer(raw, dtype=dtype, offset=header)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str, subdirs: list[str]) -> Path | None:
    for d in [folder, *(folder / s for s in subdirs)]:
        for candidate in (d / stem, d / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def load_idx_dataset(name: str, folder: Path) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """MNIST-format images (n, 1, h, w) and labels from `folder`."""
    sub = IDX_SUBDIRS.get(name, "MNIST")
    subdirs = ["raw", f"{sub}/raw", sub]
    xs, ys = [], []
    for split in ("train", "t10k"):
        images = _find(folder, f"{split}-images-idx3-ubyte", subdirs)
        labels = _find(folder, f"{split}-labels-idx1-ubyte", subdirs)
        if images is None or labels is None:
            if split == "train":
                raise FileNotFoundError(
                    f"dataset {name}: no train-images-idx3-ubyte[.gz] and "
                    f"train-labels-idx1-ubyte[.gz] in {folder} (set the dataset's path or "
                    "HPO_DATA_DIR)"
                )
            continue
        x, y = read_idx(images), read_idx(labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{images.name}/{labels.name}: expected images (n, h, w) and labels (n,), "
                f"got {x.shape} and {y.shape}"
            )
        xs.append(x[:, None].astype(np.float32))
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses any other class."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("_codecs", "encode"),  # how protocol-2 pickles carry bytes: encode(str, "latin1")
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """One CIFAR-10 python batch: images (n, 3, 32, 32) uint8 and labels (n,)."""
    with path.open("rb") as f:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch (a dict), got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels'")
    x = np.asarray(data, dtype=np.uint8)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
        raise ValueError(f"{path}: expected data (n, 3072) and n labels, got {x.shape}, {y.shape}")
    return x.reshape(-1, 3, 32, 32), y


def load_cifar10(folder: Path) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    dirs = [folder, folder / "cifar-10-batches-py"]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    files = [d / n for n in names for d in dirs if (d / n).is_file()]
    if not any(f.name.startswith("data_batch") for f in files):
        raise FileNotFoundError(
            f"dataset cifar10: no data_batch_1..5 in {folder} or {folder}/cifar-10-batches-py "
            "(set the dataset's path or HPO_DATA_DIR)"
        )
    batches = [read_cifar_batch(f) for f in files]
    x = np.concatenate([b[0] for b in batches]).astype(np.float32)
    return x, np.concatenate([b[1] for b in batches])


def load_image_dataset(
    name: str, path: str | None, *, download: bool = False
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Images (n, c, h, w) as float32 pixel values, and integer labels.

    `download`: first fetch the files the folder lacks (see trainer.download).
    """
    folder = dataset_folder(name, path)
    if download:
        download_dataset(name, folder)
    if name == "cifar10":
        return load_cifar10(folder)
    if name in IDX_SUBDIRS:
        return load_idx_dataset(name, folder)
    raise ValueError(f"unknown image dataset {name!r}; known: {list(IMAGE_DATASETS)}")
