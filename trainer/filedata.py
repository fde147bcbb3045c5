"""Large datasets read from a file on the worker, row by row, never loaded whole.

Supported formats (`SUPPORTED`):
- an uncompressed NPZ (`np.savez`, not `np.savez_compressed`) with arrays `x` and `y`
  (`X`/`Y` also accepted): its members are stored as plain `.npy` bytes inside the zip, so
  `x` is read in place at its offset in the file (no extraction, no copy);
- a folder holding `x.npy` and `y.npy` (`np.save`; `X.npy`/`Y.npy` also accepted).
x: (n, features), (n, length), (n, channels, length) or (n, c, h, w), numeric, C order.
y: (n,) class labels (integers, integral floats, booleans or strings), read into memory
(8 bytes per row), mapped to 0..K-1 in sorted order of the original labels.

`load_file_data` then splits the rows by index (stratified, as every other dataset:
`trainer.data.split_indices`), computes the training split's standardization statistics
in one sequential pass over the file in chunks (float64, Chan et al.'s pairwise update of
mean and sum of squared deviations, so millions of rows lose no digits), refusing NaN or
infinite values in any split, and returns a `TensorData` whose x splits are `FileRows`
(mini-batches read from the file with positioned reads, `trainer.rows`) and whose labels
are small device tensors. Resident memory grows by about one chunk (`CHUNK_BYTES`), one
mini-batch and the labels, whatever the file's size.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from numpy.lib import format as npy_format

from trainer.data import IntArray, TensorData, sample_layout, split_indices
from trainer.rows import FileArray, FileRows

SUPPORTED = (
    "an uncompressed .npz (np.savez) with arrays x and y, or a folder with x.npy and y.npy "
    "(np.save)"
)
CHUNK_BYTES = 16 * 2**20  # float32 bytes of rows per step of the statistics pass
NAMES = {"x": ("x", "X"), "y": ("y", "Y")}
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length


class DataFileError(ValueError):
    """The file cannot be trained on as it is; the message says why and what to do."""


@dataclass(frozen=True)
class ArrayLocation:
    """Where an .npy array's data lies: `path` at byte `offset`, and what it holds."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool


def _npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as e:
        raise DataFileError(f"{where} is not a readable .npy array: {e}") from e
    return tuple(int(d) for d in shape), np.dtype(dtype), bool(fortran)


def _in_npz(path: Path, f: BinaryIO, archive: zipfile.ZipFile, member: str) -> ArrayLocation:
    info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        raise DataFileError(
            f"{path.name}: {member} is compressed (np.savez_compressed), so its rows cannot "
            "be read in place; save it with np.savez, or as a folder with x.npy and y.npy"
        )
    if info.flag_bits & 0x1:
        raise DataFileError(f"{path.name}: {member} is encrypted")
    f.seek(info.header_offset)
    signature, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise DataFileError(f"{path.name}: {member} has no local zip header")
    f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    shape, dtype, fortran = _npy_header(f, f"{path.name}:{member}")
    return ArrayLocation(path, f.tell(), shape, dtype, fortran)


def _member(names: list[str], key: str, where: str, suffix: str = "") -> str:
    for candidate in NAMES[key]:
        if candidate + suffix in names:
            return candidate + suffix
    raise DataFileError(f"{where} holds no array {key!r} (found {sorted(names)[:10]}); {SUPPORTED}")


OpenCheck = Callable[[int, Path], None]


def _open(path: Path, check: OpenCheck | None) -> BinaryIO:
    """Open `path` for reading without following a symlink as its last part; `check(fd,
    path)` vets the opened file (e.g. that it lies where it may) before anything is read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise DataFileError(f"cannot open {path.name}: {e.strerror}") from e
    try:
        if check is not None:
            check(fd, path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def locate_arrays(
    path: Path, check: OpenCheck | None = None
) -> tuple[ArrayLocation, ArrayLocation]:
    """Where x and y lie in `path` (an uncompressed .npz or a folder of .npy files),
    reading headers only. Raises `DataFileError` for anything else."""
    if path.is_dir():
        names = os.listdir(path)
        found = []
        for key in ("x", "y"):
            file = path / _member(names, key, f"folder {path.name}", ".npy")
            with _open(file, check) as f:
                shape, dtype, fortran = _npy_header(f, file.name)
                found.append(ArrayLocation(file, f.tell(), shape, dtype, fortran))
        return found[0], found[1]
    with _open(path, check) as f:
        try:
            archive = zipfile.ZipFile(f)
        except zipfile.BadZipFile as e:
            raise DataFileError(f"{path.name} is not an .npz file: {SUPPORTED}") from e
        with archive:
            names = archive.namelist()
            x = _in_npz(path, f, archive, _member(names, "x", path.name, ".npy"))
            y = _in_npz(path, f, archive, _member(names, "y", path.name, ".npy"))
    return x, y


def check_arrays(x: ArrayLocation, y: ArrayLocation) -> None:
    """The header-level checks of an upload (`service.datasets.files.validate_arrays`):
    numeric x of 2 to 4 dimensions in C order, one label per row."""
    if x.dtype.kind not in "biuf":
        raise DataFileError(f"x must be numeric, got dtype {x.dtype}")
    if not 2 <= len(x.shape) <= 4:
        raise DataFileError(f"x must be rows x d, x L, x C x L or x C x H x W; got shape {x.shape}")
    if x.fortran_order and len(x.shape) > 1:
        raise DataFileError("x is stored in Fortran order; save np.ascontiguousarray(x)")
    if x.shape[0] == 0 or int(np.prod(x.shape[1:])) == 0:
        raise DataFileError(f"x has no values: shape {x.shape}")
    if len(y.shape) != 1:
        raise DataFileError(f"y must be one label per row, got shape {y.shape}")
    if y.shape[0] != x.shape[0]:
        raise DataFileError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    if y.dtype.kind not in "biufU":
        raise DataFileError(f"y must hold class labels, got dtype {y.dtype}")


def open_array(loc: ArrayLocation, check: OpenCheck | None = None) -> FileArray:
    """The array at `loc`, opened for positioned reads (no byte of it is read yet). Raises
    `DataFileError` if the file is shorter than the array."""
    f = _open(loc.path, check)
    fd = os.dup(f.fileno())
    f.close()
    need = loc.offset + int(np.prod(loc.shape, dtype=np.int64)) * loc.dtype.itemsize
    size = os.fstat(fd).st_size
    if need > size:
        os.close(fd)
        raise DataFileError(f"{loc.path.name} is truncated: {size} of {need} bytes")
    return FileArray(fd, loc.path, loc.offset, loc.shape, loc.dtype)


def read_labels(loc: ArrayLocation, check: OpenCheck | None = None) -> tuple[IntArray, list[str]]:
    """y as class indices 0..K-1 (sorted original labels) and the original labels."""
    y = open_array(loc, check).read(0, loc.shape[0])  # n labels
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            raise DataFileError("y must hold integer class labels (regression is not supported)")
        y = y.astype(np.int64)
    classes, index, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise DataFileError(f"y needs at least 2 classes, found {len(classes)}")
    if counts.min() < 2:
        rare = [str(c) for c, k in zip(classes, counts, strict=True) if k < 2][:5]
        raise DataFileError(f"every class needs at least 2 rows; classes {rare} have 1")
    return index.astype(np.int64).reshape(-1), [str(c) for c in classes]


def training_statistics(
    source: FileArray, train_mask: np.ndarray, per_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the rows where `train_mask` is set, per feature (shape of a sample)
    or `per_channel` (shape (c, 1, 1)), read in sequential chunks of about `CHUNK_BYTES`;
    std 0 becomes 1. Raises `DataFileError` at the first non-finite value of any row."""
    shape = source.shape
    n = shape[0]
    row_bytes = max(1, int(np.prod(shape[1:])) * 4)
    step = max(1, CHUNK_BYTES // row_bytes)
    count = 0
    mean = np.zeros(shape[1:], dtype=np.float64)
    m2 = np.zeros(shape[1:], dtype=np.float64)
    for start in range(0, n, step):
        chunk = source.read(start, min(start + step, n)).astype(np.float64)
        if not np.isfinite(chunk).all():
            bad = int(np.argwhere(~np.isfinite(chunk.reshape(len(chunk), -1)))[0][0])
            raise DataFileError(f"x has NaN or infinite values (first at row {start + bad})")
        rows = chunk[train_mask[start : start + len(chunk)]]
        if len(rows) == 0:
            continue
        # Chan, Golub & LeVeque: merge (count, mean, M2) with the chunk's own.
        c_mean = rows.mean(axis=0)
        c_m2 = ((rows - c_mean) ** 2).sum(axis=0)
        total = count + len(rows)
        delta = c_mean - mean
        mean = mean + delta * (len(rows) / total)
        m2 = m2 + c_m2 + delta**2 * (count * len(rows) / total)
        count = total
    if per_channel:  # merge the per-position statistics of each channel (equal counts)
        axes = tuple(range(1, mean.ndim))
        c_mean = mean.mean(axis=axes, keepdims=True)
        m2 = (m2 + count * (mean - c_mean) ** 2).sum(axis=axes, keepdims=True)
        mean, count = c_mean, count * int(np.prod([shape[1 + a] for a in axes]))
    std = np.sqrt(m2 / max(count, 1))
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def load_file_data(
    path: Path,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    device: str | torch.device,
    flat: bool = False,
    check: OpenCheck | None = None,
) -> TensorData:
    """The splits of the dataset file at `path`, x read on demand (see the module's doc).

    `flat`: hand out samples as (features,) vectors. `check(fd, path)` vets every file
    opened, before it is read. Raises `DataFileError` (format, shape, values) or
    `trainer.data.SplitError` (a split without some class).
    """
    x_loc, y_loc = locate_arrays(path, check)
    check_arrays(x_loc, y_loc)
    y, _ = read_labels(y_loc, check)
    i_train, i_val, i_test = split_indices(
        y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    source = open_array(x_loc, check)
    mask = np.zeros(len(y), dtype=bool)
    mask[i_train] = True
    image = len(x_loc.shape) == 4
    mean, std = training_statistics(source, mask, per_channel=image)
    sample = x_loc.shape[1:]
    out_shape = (int(np.prod(sample)),) if flat else None
    if flat:
        mean = np.broadcast_to(mean, sample).reshape(-1)
        std = np.broadcast_to(std, sample).reshape(-1)

    def rows(idx: np.ndarray) -> FileRows:
        return FileRows(source, np.sort(idx), mean, std, device, out_shape)

    def labels(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y[np.sort(idx)]).to(device)

    return TensorData(
        x_train=rows(i_train),
        y_train=labels(i_train),
        x_val=rows(i_val),
        y_val=labels(i_val),
        x_test=rows(i_test),
        y_test=labels(i_test),
        n_classes=int(y.max()) + 1,
        layout="tabular" if flat else sample_layout(tuple(sample)),
    )
