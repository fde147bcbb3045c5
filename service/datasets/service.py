"""Uploaded datasets: stored in the database by content hash, loaded by workers anywhere.

The arrays are stored once per content (a canonical NPZ of X float32 and y int64, keyed by
its sha256) in `hpo_dataset_blobs`; names in `hpo_datasets` point at them. A worker that
knows only the database URL fetches the blob once and keeps it under its data directory,
named by the hash, which it verifies before use.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import Dataset, DatasetBlob, utcnow
from service.core.errors import (
    DatasetExists,
    DatasetFileError,
    DatasetInUse,
    DatasetNotFound,
    InvalidInput,
)
from service.core.settings import Settings
from service.core.types import UtcDatetime
from service.datasets.files import (
    DatasetLimits,
    ParsedDataset,
    canonical_npz,
    parse_dataset,
    read_canonical,
)
from trainer.data import DATASET_NAMES

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class DatasetInfo(BaseModel):
    name: str
    sha256: str
    n_rows: int
    shape: list[int]
    n_classes: int
    classes: list[str]
    source_format: str
    task: str = "classification"
    size_bytes: int
    created_at: UtcDatetime


def name_error(name: str) -> str | None:
    if not NAME_RE.fullmatch(name):  # match would let a trailing newline through
        return "1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit"
    if name in DATASET_NAMES:
        return f"{name!r} is a built-in dataset; choose another name"
    return None


def _info(d: Dataset, size: int) -> DatasetInfo:
    return DatasetInfo(
        name=d.name,
        sha256=d.sha256,
        n_rows=d.n_rows,
        shape=list(d.shape),
        n_classes=d.n_classes,
        classes=list(d.classes),
        source_format=d.source_format,
        task=d.task,
        size_bytes=size,
        created_at=d.created_at,
    )


def limits_of(settings: Settings) -> DatasetLimits:
    """The service's caps on an upload."""
    return DatasetLimits(
        max_rows=settings.max_dataset_rows,
        max_features=settings.max_dataset_features,
        max_classes=settings.max_dataset_classes,
        max_bytes=settings.max_dataset_bytes,
        max_compression_ratio=settings.max_dataset_compression_ratio,
        ratio_floor=settings.max_request_bytes,
    )


def upload_dataset(
    session: Session,
    name: str,
    filename: str,
    data: bytes,
    target: str | None,
    limits: DatasetLimits,
    owner_token_id: int | None,
) -> DatasetInfo:
    """Validate an uploaded file, then store it under `name`.

    Raises `InvalidInput` naming the form field (name, file, target) before anything is
    written, `DatasetExists` if the name is taken.
    """
    if (error := name_error(name)) is not None:
        raise InvalidInput(error, field="name")
    try:
        parsed = parse_dataset(filename, data, target, limits)
    except DatasetFileError:
        raise
    except Exception as e:  # a parser's unforeseen complaint is the file's fault, not ours
        raise DatasetFileError("file", f"cannot read the file: {type(e).__name__}: {e}") from e
    return create_dataset(session, name, parsed, owner_token_id)


def create_dataset(
    session: Session, name: str, parsed: ParsedDataset, owner_token_id: int | None
) -> DatasetInfo:
    """Store a parsed dataset (flushed, not committed); raises `DatasetExists`.

    A lost race for the same blob rolls the session back and tries once more, so the
    session must hold no other write.
    """
    blob = canonical_npz(parsed.x, parsed.y)
    sha = hashlib.sha256(blob).hexdigest()
    for attempt in range(2):
        try:
            if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
                raise DatasetExists(name)
            if session.get(DatasetBlob, sha) is None:
                session.add(DatasetBlob(sha256=sha, data=blob, size_bytes=len(blob)))
                session.flush()
            row = Dataset(
                name=name,
                sha256=sha,
                source_format=parsed.source_format,
                n_rows=int(parsed.x.shape[0]),
                shape=[int(s) for s in parsed.x.shape],
                n_classes=len(parsed.classes),
                classes=parsed.classes,
                task=parsed.task,
                owner_token_id=owner_token_id,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return _info(row, len(blob))
        except IntegrityError as e:
            # Another upload took the name, or stored the same blob, between our check and
            # insert: the first is a conflict, the second needs one more try.
            session.rollback()
            if attempt == 1:
                raise DatasetExists(name) from e
    raise AssertionError("unreachable")


def list_datasets(session: Session) -> list[DatasetInfo]:
    """Every uploaded dataset, by name."""
    rows = session.execute(
        select(Dataset, DatasetBlob.size_bytes)
        .join(DatasetBlob, DatasetBlob.sha256 == Dataset.sha256)
        .order_by(Dataset.name)
    ).all()
    return [_info(d, size) for d, size in rows]


def get_row(session: Session, name: str) -> Dataset:
    """The dataset's row; raises `DatasetNotFound`."""
    row = session.scalar(select(Dataset).where(Dataset.name == name))
    if row is None:
        raise DatasetNotFound(name)
    return row


def get_dataset(session: Session, name: str) -> DatasetInfo:
    """An uploaded dataset; raises `DatasetNotFound`."""
    found = session.execute(
        select(Dataset, DatasetBlob.size_bytes)
        .join(DatasetBlob, DatasetBlob.sha256 == Dataset.sha256)
        .where(Dataset.name == name)
    ).first()
    if found is None:
        raise DatasetNotFound(name)
    return _info(found[0], found[1])


def exists(session: Session, name: str) -> bool:
    return session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None


def delete_dataset(session: Session, name: str, used_by: list[str]) -> None:
    """Deletes the name, and the blob once no name points at it; raises `DatasetNotFound`,
    or `DatasetInUse` if `used_by` names running studies that use it (the studies package
    knows which: `studies.service.running_studies_using`)."""
    if used_by:
        raise DatasetInUse(name, used_by)
    row = get_row(session, name)
    sha = row.sha256
    session.delete(row)
    session.flush()
    others = session.scalar(select(func.count()).select_from(Dataset).where(Dataset.sha256 == sha))
    if not others:
        session.execute(delete(DatasetBlob).where(DatasetBlob.sha256 == sha))


# ---- workers -------------------------------------------------------------------------------


def resolve(url: str, name: str) -> str:
    """The content hash an uploaded dataset's name points at now."""
    with session_scope(url) as session:
        return get_row(session, name).sha256


def load_arrays(url: str, sha: str, cache_dir: Path) -> tuple[NDArray[np.float32], NDArray[Any]]:
    """X and y (int64 class indices, or float32 regression targets) of a stored blob, from
    the local cache when its hash checks out."""
    path = cache_dir / f"{sha}.npz"
    if path.exists():
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() == sha:
            return read_canonical(blob)
    with session_scope(url) as session:
        blob_row = session.get(DatasetBlob, sha)
        if blob_row is None:
            raise DatasetNotFound(sha)
        blob = blob_row.data
    if hashlib.sha256(blob).hexdigest() != sha:
        raise ValueError(f"stored dataset blob {sha} does not match its hash")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    return read_canonical(blob)
