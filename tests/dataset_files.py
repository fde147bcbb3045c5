"""Dataset files for the tests: good ones, and every kind of bad one."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from pyarrow import parquet


def npz_bytes(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def signal_dataset(
    n: int = 600, length: int = 40, n_classes: int = 10, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """n x length noisy sinusoids; the class is the frequency (1..n_classes cycles)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    t = np.linspace(0.0, 1.0, length, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t[None, :] + phase)
    x += 0.3 * rng.standard_normal((n, length))
    return x.astype(np.float32), y.astype(np.int64)


def small_xy(n: int = 60, d: int = 5, k: int = 3, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.standard_normal((n, d)) + y[:, None] * 2.0
    return x.astype(np.float32), y.astype(np.int64)


def csv_bytes(x: Any, y: Any, target: str = "label", sep: str = ",") -> bytes:
    header = sep.join([*(f"f{i}" for i in range(x.shape[1])), target])
    rows = [
        sep.join([*(repr(float(v)) for v in row), str(label)])
        for row, label in zip(x, y, strict=True)
    ]
    return ("\n".join([header, *rows]) + "\n").encode()


def parquet_bytes(columns: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    parquet.write_table(pa.table(columns), buf)
    return buf.getvalue()


def zip_bomb(declared_bytes: int) -> bytes:
    """An NPZ whose X.npy inflates to `declared_bytes` of zeros (a few KB compressed)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (declared_bytes // 4,)}
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            chunk = bytes(2**20)
            for _ in range(declared_bytes // len(chunk)):
                member.write(chunk)
        archive.writestr("y.npy", npz_member(np.zeros(4, dtype=np.int64)))
    return buf.getvalue()


def npz_member(array: Any) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    return buf.getvalue()
