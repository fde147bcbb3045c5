"""Reading and validating uploaded dataset files (NPZ, CSV, Parquet) before anything is stored.

Every check happens on the uploaded bytes in memory: a file that fails any of them is
answered with a reason and leaves no trace. NPZ files are never unpickled (object arrays are
refused from their header).

Compressed formats are bounded by what they really inflate to, never by what they declare
(zip bombs): an upload may grow to at most `DatasetLimits.max_inflated` bytes, the dataset cap
and, past the request cap, a compression ratio. An NPZ member's array header is read first and
its size checked before its buffer is allocated; then exactly that many bytes are streamed
into it, and a member that ends early or holds more fails. A Parquet file's footer is
checked first (rows x column widths: what Arrow will hold), then it is decoded in small
batches, counting the bytes decoded so far (see `_read_parquet`).
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from service.core.errors import DatasetFileError as DatasetFileError  # re-exported
from service.core.types import bounded_text_problem
from trainer.data import Task, infer_task

FORMATS = ("npz", "csv", "parquet")
MAX_X_DIMS = 4  # rows x (d | L | C x L | H x W | C x H x W)


NPY_CHUNK = 1 << 20  # bytes inflated per read of an NPZ member
CSV_BLOCK_BYTES = 1 << 20  # pyarrow's default block; files with longer lines get larger ones
CSV_MAX_BLOCK_BYTES = 2**31 - 1  # pyarrow's block size is an int32
PARQUET_BATCH_ROWS = 65_536  # rows decoded per Parquet batch, at most
PARQUET_BATCH_BYTES = 4 << 20  # and about this many bytes decoded per batch


@dataclass(frozen=True)
class DatasetLimits:
    """The caps on an upload (see `max_inflated` for compressed formats)."""

    max_rows: int
    max_features: int
    max_classes: int
    max_bytes: int
    max_compression_ratio: float = 100.0
    ratio_floor: int = 64 * 2**20  # inflating up to this many bytes needs no ratio check

    def max_inflated(self, compressed: int) -> int:
        """Bytes an upload with `compressed` bytes of compressed data may inflate to: never
        over `max_bytes`, and past `ratio_floor` (what a plain upload may be anyway) at most
        `max_compression_ratio` times `compressed` (the amplification a zip bomb lives on)."""
        by_ratio = int(self.max_compression_ratio * compressed)
        return min(self.max_bytes, max(self.ratio_floor, by_ratio))

    def inflation_refused(self, what: str, size: int, compressed: int) -> DatasetFileError:
        """The refusal of `what` inflating to `size` bytes from `compressed` bytes."""
        if size > self.max_bytes:
            why = f"over this service's cap of {self.max_bytes} (HPO_MAX_DATASET_BYTES)"
        else:
            why = (
                f"{size / max(compressed, 1):.0f} times its {compressed} compressed bytes; past "
                f"{self.ratio_floor} bytes (HPO_MAX_REQUEST_BYTES) an upload may inflate at "
                f"most {self.max_compression_ratio:g} times (HPO_MAX_DATASET_COMPRESSION_RATIO)"
            )
        return DatasetFileError("file", f"{what} {size} bytes uncompressed, {why}")


@dataclass(frozen=True)
class ParsedDataset:
    x: NDArray[np.float32]  # original shape, rows first
    y: NDArray[Any]  # class indices 0..K-1 (int64), or regression targets (float32)
    classes: list[str]  # original label of class index i; empty for regression
    source_format: str
    task: Task = "classification"


def detect_format(filename: str, data: bytes) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix in ("npz", "csv"):
        return suffix
    if suffix in ("parquet", "pq"):
        return "parquet"
    if data.startswith(b"PK\x03\x04"):
        return "npz"
    if data.startswith(b"PAR1"):
        return "parquet"
    raise DatasetFileError("file", f"unknown format {filename!r}; upload .npz, .csv or .parquet")


def parse_dataset(
    filename: str, data: bytes, target: str | None, limits: DatasetLimits
) -> ParsedDataset:
    """Parse and validate an upload; raises DatasetFileError with the reason."""
    if not data:
        raise DatasetFileError("file", "the file is empty")
    fmt = detect_format(filename, data)
    if fmt == "npz":
        if target:
            raise DatasetFileError("target", "only for CSV and Parquet; an NPZ holds 'y'")
        x, y = _read_npz(data, limits)
    else:
        if not target:
            raise DatasetFileError("target", "required for CSV and Parquet: the label column")
        x, y = _read_table(fmt, data, target, limits)
    if infer_task(y) == "regression":
        x32, values = validate_regression_arrays(x, y, limits)
        return ParsedDataset(x=x32, y=values, classes=[], source_format=fmt, task="regression")
    x, labels, classes = validate_arrays(x, y, limits)
    return ParsedDataset(x=x, y=labels, classes=classes, source_format=fmt)


# ---- NPZ ----------------------------------------------------------------------------------


def _read_npz(data: bytes, limits: DatasetLimits) -> tuple[NDArray[Any], NDArray[Any]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = {i.filename: i for i in archive.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DatasetFileError("file", f"not a readable NPZ (zip) file: {e}") from e
    missing = [n for n in ("X", "y") if f"{n}.npy" not in infos]
    if missing:
        found = sorted(n.removesuffix(".npy") for n in infos)
        raise DatasetFileError(
            "file", f"the NPZ must hold arrays 'X' and 'y'; missing {missing}, found {found}"
        )
    members = [infos[f"{n}.npy"] for n in ("X", "y")]
    # The directory's sizes only allow an early refusal; what is read is counted below.
    compressed = min(len(data), sum(i.compress_size for i in members))
    allowed = limits.max_inflated(compressed)
    declared = sum(i.file_size for i in members)
    if declared > allowed:
        raise limits.inflation_refused("the NPZ declares", declared, compressed)
    arrays: list[NDArray[Any]] = []
    for name, info in zip(("X", "y"), members, strict=True):
        left = allowed - sum(a.nbytes for a in arrays)
        try:
            with archive.open(info) as member:
                arrays.append(_read_member(member, name, left, compressed, limits))
        except DatasetFileError:
            raise
        except Exception as e:  # truncated or corrupt member: zlib, CRC, EOF, header errors
            raise DatasetFileError("file", f"cannot read array {name!r}: {e}") from e
    return arrays[0], arrays[1]


def _read_member(
    member: IO[bytes], name: str, allowed: int, compressed: int, limits: DatasetLimits
) -> NDArray[Any]:
    """One .npy member: its header, then exactly the bytes it declares, streamed into a buffer
    allocated only once that size is known to be within `allowed`."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise DatasetFileError("file", f"array {name!r}: .npy format {version} is not read")
    if dtype.hasobject:
        raise DatasetFileError(
            "file", f"array {name!r} holds Python objects; only numeric arrays are read"
        )
    if dtype.kind not in "biufU" or dtype.fields is not None:
        raise DatasetFileError(
            "file", f"array {name!r} has dtype {dtype}; only numeric arrays (and labels) are read"
        )
    count = math.prod(shape)
    size = count * dtype.itemsize
    if size > allowed:
        raise limits.inflation_refused(
            f"array {name!r} {tuple(shape)} {dtype} needs", size, compressed
        )
    flat = np.empty(count, dtype=dtype)
    view = flat.view(np.uint8).data
    done = 0
    while done < size:
        chunk = member.read(min(NPY_CHUNK, size - done))
        if not chunk:
            raise DatasetFileError(
                "file", f"array {name!r} ends after {done} of its {size} bytes (truncated)"
            )
        view[done : done + len(chunk)] = chunk
        done += len(chunk)
    if member.read(1):  # also reaches the member's end, where zipfile checks the CRC
        raise DatasetFileError("file", f"array {name!r} holds more data than its header declares")
    if fortran_order:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


# ---- CSV and Parquet -----------------------------------------------------------------------


def _read_table(
    fmt: str, data: bytes, target: str, limits: DatasetLimits
) -> tuple[NDArray[Any], NDArray[Any]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _read_csv(data, limits) if fmt == "csv" else _read_parquet(data, limits)
    columns = list(table.column_names)
    if target not in columns:
        hint = ""
        if len(columns) == 1 and any(d in columns[0] for d in ";\t|"):
            hint = " (the file has one column: is it separated by commas?)"
        raise DatasetFileError(
            "target", f"column {target!r} not found; columns: {columns[:20]}{hint}"
        )
    if table.num_rows == 0:
        raise DatasetFileError("file", "the file has no rows")
    features = [c for c in columns if c != target]
    if not features:
        raise DatasetFileError("file", "no feature columns besides the target")
    for name in features:
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            if pa.types.is_boolean(col.type):
                continue
            example = _first_value(col)
            raise DatasetFileError(
                "file", f"column {name!r} is not numeric ({col.type}), e.g. {example!r}"
            )
        if col.null_count:
            raise DatasetFileError("file", f"column {name!r} has {col.null_count} empty values")
    label = table.column(target)
    if label.null_count:
        raise DatasetFileError("target", f"column {target!r} has {label.null_count} empty values")
    if table.num_rows > limits.max_rows:
        raise DatasetFileError(
            "file",
            _rows_over(table.num_rows, limits),
        )
    x = np.column_stack(
        [pc.cast(table.column(c), pa.float64()).to_numpy(zero_copy_only=False) for c in features]
    )
    if pa.types.is_floating(label.type):
        y: NDArray[Any] = label.to_numpy(zero_copy_only=False)
    elif pa.types.is_integer(label.type) or pa.types.is_boolean(label.type):
        y = label.to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        texts = pc.cast(label, pa.string()).to_pylist()
        # Before numpy pads every label to the longest one's width.
        check_classes(set(texts), limits)
        y = np.asarray(texts, dtype=str)
    return x, y


def _first_value(col: Any) -> object:
    for chunk in col.chunks:
        for v in chunk.to_pylist():
            if v is not None:
                return v
    return None


def _read_csv(data: bytes, limits: DatasetLimits) -> Any:
    import pyarrow as pa
    from pyarrow import csv

    header = data.split(b"\n", 1)[0]
    fields = header.count(b",") + 1
    if fields > limits.max_features + 1:
        raise DatasetFileError(
            "file",
            f"the header has {fields} comma-separated columns; at most "
            f"{limits.max_features} features and the target are allowed (HPO_MAX_DATASET_FEATURES)",
        )
    try:
        try:
            return csv.read_csv(io.BytesIO(data))
        except pa.ArrowInvalid as e:
            # pyarrow parses in blocks (1 MiB by default) and needs the header, and every
            # row, inside one block: past that it cannot infer the columns or says a row
            # "straddles" two blocks. Such a file is read again in blocks that hold its
            # longest line.
            longest = _longest_line(data)
            if longest < CSV_BLOCK_BYTES:
                raise
            if longest >= CSV_MAX_BLOCK_BYTES:
                raise DatasetFileError(
                    "file",
                    f"a line of {longest} bytes; the CSV reader takes lines of at most "
                    f"{CSV_MAX_BLOCK_BYTES - 1} bytes",
                ) from e
            options = csv.ReadOptions(block_size=longest + 1)
            return csv.read_csv(io.BytesIO(data), read_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as e:
        if "cannot infer number of columns" in str(e):
            raise DatasetFileError(
                "file", "the CSV has no rows under a header (it is blank or holds only a header)"
            ) from e
        raise DatasetFileError("file", f"cannot parse the CSV: {e}") from e


def _longest_line(data: bytes) -> int:
    """Bytes in the longest line of `data`, its newline included."""
    longest, start = 0, 0
    while (end := data.find(b"\n", start)) >= 0:
        longest = max(longest, end + 1 - start)
        start = end + 1
    return max(longest, len(data) - start)


def _read_parquet(data: bytes, limits: DatasetLimits) -> Any:
    """The Parquet file as an Arrow table, never decoding much more than `limits` allow.

    First from the footer alone, before any page is decoded: the row and column caps, the
    column types (numbers, or text for the label; nested columns are refused) and the size
    the columns decode to (`_parquet_declared`). Then the file is decoded in batches of about
    `PARQUET_BATCH_BYTES`, counting what each really holds, so metadata that lies costs at
    most one batch past the cap. Text columns are decoded as dictionaries and counted at
    their expanded size before they are expanded. Arrow's memory pool gives what it freed
    back to the system afterwards, whether the file was read or refused.
    """
    import pyarrow as pa
    from pyarrow import parquet

    try:
        pf = parquet.ParquetFile(io.BytesIO(data))
        meta = pf.metadata
        if meta.num_rows > limits.max_rows:
            raise DatasetFileError("file", _rows_over(meta.num_rows, limits))
        if meta.num_columns > limits.max_features + 1:
            raise DatasetFileError(
                "file",
                f"{meta.num_columns} columns; at most {limits.max_features} features and the "
                "target are allowed (HPO_MAX_DATASET_FEATURES)",
            )
        schema = pf.schema_arrow
        for field in schema:
            if _fixed_width(field.type) is None and not _expands(field.type):
                raise DatasetFileError(
                    "file",
                    f"column {field.name!r} has type {field.type}; only columns of numbers "
                    "(and a label column of text) are read",
                )
        allowed = limits.max_inflated(len(data))
        declared = _parquet_declared(meta, schema)
        if declared > allowed:
            raise limits.inflation_refused("the Parquet file declares", declared, len(data))
        texts = [f.name for f in schema if _expands(f.type)]
        row_bytes = sum(_fixed_width(f.type) or 4 for f in schema)  # 4: a dictionary index
        rows = int(max(1, min(PARQUET_BATCH_ROWS, PARQUET_BATCH_BYTES // max(row_bytes, 1))))
        # The metadata may lie: count what is really decoded, a bounded batch at a time.
        batches, decoded = [], 0
        reader = parquet.ParquetFile(io.BytesIO(data), read_dictionary=texts)
        for batch in reader.iter_batches(batch_size=rows, use_threads=False):
            decoded += sum(_decoded_bytes(column) for column in batch.columns)
            if decoded > allowed:
                raise limits.inflation_refused(
                    "the Parquet file decodes to over", allowed, len(data)
                )
            batches.append(batch)
        if not batches:
            return schema.empty_table()
        table = pa.Table.from_batches(batches).cast(schema)  # text expanded: counted above
        return _binary_as_text(table)
    except DatasetFileError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DatasetFileError("file", f"cannot read the Parquet file: {e}") from e
    finally:
        pa.default_memory_pool().release_unused()


def _binary_as_text(table: Any) -> Any:
    """`table` with its binary columns as UTF-8 text; DatasetFileError naming a column whose
    bytes are not UTF-8 (a label of bytes would otherwise fail deep in Arrow)."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            try:
                table = table.set_column(i, field.name, table.column(i).cast(pa.large_string()))
            except pa.ArrowInvalid as e:
                raise DatasetFileError(
                    "file", f"column {field.name!r} holds bytes that are not UTF-8 text"
                ) from e
    return table


def _fixed_width(arrow_type: Any) -> float | None:
    """Bytes per value of a fixed-width Arrow type (1/8 for booleans), None for the others
    (text, nested, dictionaries)."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return None
    if pa.types.is_null(arrow_type):
        return 0.0
    try:
        return float(arrow_type.bit_width) / 8
    except ValueError:
        return None


def _expands(arrow_type: Any) -> bool:
    """Whether a column is read as a dictionary and counted at its expanded size: text and
    binary columns, and columns the file stores as dictionaries of text or numbers."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        value = arrow_type.value_type
        return _expands(value) or _fixed_width(value) is not None
    return any(
        check(arrow_type)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_string_view,
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_binary_view,
        )
    )


def _parquet_declared(meta: Any, schema: Any) -> int:
    """Bytes the Parquet file's columns decode to as its footer tells them: per row group
    and column, the larger of the encoded size (`total_uncompressed_size`, before any page
    decoding: small for run-length encoded zeros) and the row count times the Arrow width
    with a validity bitmap (text counted at its 4-byte dictionary index: its expanded size
    is counted while decoding)."""
    declared = 0.0
    widths = [_fixed_width(field.type) for field in schema]
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j in range(group.num_columns):
            width = widths[j] if j < len(widths) else None
            arrow = group.num_rows * ((4 if width is None else width) + 1 / 8)
            declared += max(group.column(j).total_uncompressed_size, arrow)
    return math.ceil(declared)


def _decoded_bytes(column: Any) -> int:
    """Bytes an Arrow array of a decoded batch holds, a dictionary array counted as it will
    be once expanded (its values per row, offsets, and the dictionary itself)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_dictionary(column.type):
        return int(column.nbytes)
    dictionary = column.dictionary
    width = _fixed_width(dictionary.type)
    if width is not None:
        values = len(column) * width
    else:
        lengths = pc.binary_length(dictionary)
        values = (pc.sum(pc.take(lengths, column.indices)).as_py() or 0) + 8 * (len(column) + 1)
    return int(column.nbytes + values)


def _rows_over(n: int, limits: DatasetLimits) -> str:
    return f"{n} rows, over the cap of {limits.max_rows} (HPO_MAX_DATASET_ROWS)"


# ---- checks common to every format ------------------------------------------------------------


def validate_regression_arrays(
    x: NDArray[Any], y: NDArray[Any], limits: DatasetLimits
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """X as `validate_arrays` checks it; y (n,) finite float targets that fit float32 and
    are not all equal (nothing to regress on)."""
    x32, _, _ = validate_arrays(x, y, limits, check_y=False)  # y's shape checked too
    if not np.isfinite(y).all():
        row = int(np.argwhere(~np.isfinite(y))[0][0])
        raise DatasetFileError("file", f"y has NaN or infinite values (first at row {row})")
    y32 = y.astype(np.float32)
    if not np.isfinite(y32).all():
        raise DatasetFileError("file", "y has values too large for float32")
    if np.ptp(y32) == 0:
        raise DatasetFileError("file", "y is constant; a regression target must vary")
    return x32, y32


def validate_arrays(
    x: NDArray[Any], y: NDArray[Any], limits: DatasetLimits, *, check_y: bool = True
) -> tuple[NDArray[np.float32], NDArray[np.int64], list[str]]:
    """Numeric, finite, consistent, within the caps; labels mapped to 0..K-1 (`check_y`
    False: X only, with y just counted)."""
    if x.dtype.kind not in "biuf":
        raise DatasetFileError("file", f"X must be numeric, got dtype {x.dtype}")
    if not 2 <= x.ndim <= MAX_X_DIMS:
        raise DatasetFileError(
            "file",
            f"X must be rows x d, x L, x C x L, x H x W or x C x H x W; got shape {x.shape}",
        )
    if y.ndim != 1:
        raise DatasetFileError("file", f"y must be one label per row, got shape {y.shape}")
    n = x.shape[0]
    if n == 0:
        raise DatasetFileError("file", "the dataset has no rows")
    if y.shape[0] != n:
        raise DatasetFileError("file", f"X has {n} rows but y has {y.shape[0]}")
    if n > limits.max_rows:
        raise DatasetFileError("file", _rows_over(n, limits))
    per_row = int(np.prod(x.shape[1:]))
    if per_row == 0 or per_row > limits.max_features:
        raise DatasetFileError(
            "file",
            f"{per_row} values per row; allowed: 1 to {limits.max_features} "
            "(HPO_MAX_DATASET_FEATURES)",
        )
    if n * per_row * 4 > limits.max_bytes:
        raise DatasetFileError(
            "file",
            f"X needs {n * per_row * 4} bytes as float32, over the cap of {limits.max_bytes} "
            "(HPO_MAX_DATASET_BYTES)",
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x.reshape(n, -1)))[0][0])
        raise DatasetFileError("file", f"X has NaN or infinite values (first at row {row})")
    x32 = x.astype(np.float32, copy=False)  # no second copy of an upload that is float32
    if not np.isfinite(x32).all():
        raise DatasetFileError("file", "X has values too large for float32")
    if not check_y:
        return x32, y, []
    y = _labels(y)
    classes, index, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise DatasetFileError("file", f"y needs at least 2 classes, found {len(classes)}")
    check_classes([str(c) for c in classes], limits)
    if counts.min() < 2:
        rare = [str(c) for c, k in zip(classes, counts, strict=True) if k < 2][:5]
        raise DatasetFileError("file", f"every class needs at least 2 rows; classes {rare} have 1")
    return x32, index.astype(np.int64).reshape(n), [str(c) for c in classes]


def check_classes(classes: Collection[str], limits: DatasetLimits) -> None:
    """The distinct class labels of an upload, as they are stored and shown: at most
    `limits.max_classes` of them, each text every database stores and JSON encodes, of at
    most `MAX_TEXT_LENGTH` characters (`core.types.bounded_text_problem`, the rule of every
    string a request carries). Raises DatasetFileError at `file`."""
    if len(classes) > limits.max_classes:
        raise DatasetFileError(
            "file", f"{len(classes)} classes, over the cap of {limits.max_classes}"
        )
    for label in sorted(classes):
        if (problem := bounded_text_problem(label)) is not None:
            shown = repr(label[:40]) + ("..." if len(label) > 40 else "")
            raise DatasetFileError("file", f"the class label {shown} {problem}")


def _labels(y: NDArray[Any]) -> NDArray[Any]:
    if y.dtype.kind in "biuU":
        return y
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            raise DatasetFileError(
                "file", "y must hold finite values (class labels or regression targets)"
            )
        return y.astype(np.int64)
    raise DatasetFileError("file", f"y must hold integer class labels, got dtype {y.dtype}")


# ---- canonical storage -----------------------------------------------------------------------


def canonical_npz(x: NDArray[np.float32], y: NDArray[Any]) -> bytes:
    """X (float32) and y (int64 class indices, or float32 regression targets) as an NPZ
    whose bytes depend only on the arrays, so equal content hashes to one stored copy (no
    timestamps: a fixed date in every zip entry)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in (("X", x), ("y", y)):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def read_canonical(blob: bytes) -> tuple[NDArray[np.float32], NDArray[Any]]:
    """X (float32) and y: int64 class indices, or float32 targets of a regression upload."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        y = npz["y"]
        return npz["X"].astype(np.float32), y.astype(
            np.float32 if y.dtype.kind == "f" else np.int64
        )
