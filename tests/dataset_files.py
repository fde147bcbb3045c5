"""Dataset files for the tests: good ones, and every kind of bad one."""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
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


MIB = 2**20


def _raw_deflate(data: bytes) -> bytes:
    """`data` as a self-contained run of raw deflate blocks (history reset, byte-aligned),
    so that such runs concatenate into one stream."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)


def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip of (name, raw deflate stream, crc32, real size, size the directory declares)."""
    out, directory = io.BytesIO(), io.BytesIO()
    for name, stream, crc, _size, declared in members:
        offset = out.tell()
        fields = (20, 0, 8, 0, 33, crc, len(stream), declared, len(name), 0)  # 1980-01-01
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + name.encode() + stream)
        directory.write(
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, offset)
            + name.encode()
        )
    start = out.tell()
    out.write(directory.getvalue())
    n = len(members)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, directory.tell(), start, 0))
    return out.getvalue()


@functools.cache
def _zeros_member(mib: int, features: int) -> tuple[int, bytes, int, int]:
    """X.npy of float32 zeros, (rows, features), `mib` MiB after its header: (rows, raw
    deflate stream, crc32, size). Cached: the CRC of a GiB takes a while."""
    rows = mib * MIB // (4 * features)
    header = npy_header((rows, features))
    zeros = bytes(MIB)
    crc = zlib.crc32(header)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    stream = _raw_deflate(header) + _raw_deflate(zeros) * mib + b"\x03\x00"
    return rows, stream, crc, len(header) + mib * MIB


def zip_bomb(inflated: int, *, declared: int | None = None, features: int = 256) -> bytes:
    """An NPZ whose X.npy is float32 zeros of shape (inflated // (4 * features), features),
    about 1 KB per MiB inflated, with labels 0, 1, 0, 1, ... that make it a valid dataset.
    `declared`: the X size the zip directory claims (default: the truth); `inflated` is
    rounded down to whole MiB of zeros after the .npy header."""
    rows, stream, crc, size = _zeros_member(inflated // MIB, features)
    y = npz_member((np.arange(rows) % 2).astype(np.int64))
    y_stream = _raw_deflate(y) + b"\x03\x00"
    return _zip(
        [
            ("X.npy", stream, crc, size, size if declared is None else declared),
            ("y.npy", y_stream, zlib.crc32(y), len(y), len(y)),
        ]
    )


def npz_member(array: Any) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    return buf.getvalue()


def npz_of_members(**members: bytes) -> bytes:
    """An NPZ of raw .npy members, e.g. one whose header and data disagree."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, member in members.items():
            archive.writestr(f"{name}.npy", member)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


@functools.cache
def parquet_bomb(rows: int = 1_000_000, features: int = 250) -> bytes:
    """A Parquet file of `features` float32 zero columns and an alternating 0/1 label, `rows`
    rows in one row group, zstd: about 1 KB per MiB it decodes to (the default 10**6 rows x
    250 features: 0.94 MB that decodes to 954 MiB). Built from one shared zero column, so
    writing it takes a few MiB. Cached: it takes a second."""
    zeros = pa.array(np.zeros(rows, np.float32))
    columns = {f"f{i}": zeros for i in range(features)}
    table = pa.table(columns | {"label": pa.array(np.arange(rows) % 2)})
    buf = io.BytesIO()
    parquet.write_table(table, buf, compression="zstd", row_group_size=rows)
    return buf.getvalue()


def parquet_text_bomb(rows: int, label_bytes: int) -> bytes:
    """A Parquet file whose label column holds two texts of `label_bytes` bytes, alternating
    over `rows` rows: a dictionary of two entries and 1-bit indices that expand to
    rows x label_bytes bytes of text; the footer declares only the encoded size. One
    float32 feature of zeros. Written from the dictionary (never expanded here) and without
    Arrow's schema, so that a reader sees a plain text column."""
    texts = pa.array(["a" * label_bytes, "b" * label_bytes])
    labels = pa.DictionaryArray.from_arrays(pa.array(np.arange(rows, dtype=np.int32) % 2), texts)
    table = pa.table({"f0": np.zeros(rows, np.float32), "label": labels})
    buf = io.BytesIO()
    parquet.write_table(table, buf, compression="zstd", store_schema=False)
    return buf.getvalue()
