"""A split's samples read from a file on demand instead of held as a tensor.

`FileRows` stands where `TensorData` otherwise holds a tensor (`x_train`, `x_val`, `x_test`)
and answers what the training loop asks of one: `shape`, `device`, and indexing by a tensor
of row numbers (a mini-batch) or a slice (an evaluation chunk), which reads just those rows
from the file, standardizes them, (x - mean) / std with the training split's statistics, as
float32 and puts them on the device. The process holds one mini-batch at a time, never a
copy of the file.

Rows are read with positioned reads (`os.preadv`, one per run of consecutive rows) into the
batch's own buffer, not through a memory mapping: mapped file pages count in the process's
resident set, and the kernel maps pages around every faulting one (fault-around, whole large
folios), so a mini-batch of 1,024 random rows of 1 KB mapped about 900 MB of a 1 GB file
(measured; `MADV_RANDOM` does not prevent it). Read this way the file's pages stay in the
kernel's page cache, shared and reclaimable, and the resident set grows by a batch.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(eq=False)
class FileArray:
    """A C-order array stored at byte `offset` of an open file (`fd`, owned: closed when
    this object is collected)."""

    fd: int
    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def _read_into(self, out: np.ndarray, first_row: int) -> None:
        view = out.data.cast("B")  # out is C-contiguous: rows of the file, in order
        done, position = 0, self.offset + first_row * self.row_bytes
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], position + done)
            if n == 0:
                raise OSError(f"{self.path.name}: unexpected end of file")
            done += n

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1, read into a new array."""
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        self._read_into(out, start)
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """A new array of the rows `rows` (int64 row numbers, any order), in that order:
        read sorted, one positioned read per run of consecutive rows."""
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if len(rows) == 0:
            return out
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        starts = np.concatenate(([0], breaks))
        stops = np.concatenate((breaks, [len(rows)]))
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            self._read_into(out[a:b], int(ordered[a]))
        if np.any(order != np.arange(len(rows))):
            unsorted = np.empty_like(out)
            unsorted[order] = out
            return unsorted
        return out

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class FileRows:
    """The rows `rows` of a file's array (n, *sample_shape), standardized on read and
    placed on `device`; indexing gives a float32 tensor (len(index), *out_shape).

    `mean`, `std`: float32, broadcastable to a sample; `out_shape`: the sample shape
    handed out (e.g. flattened), default the stored one.
    """

    def __init__(
        self,
        source: FileArray,
        rows: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        device: str | torch.device,
        out_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.source = source
        self.rows = np.asarray(rows, dtype=np.int64)
        self.mean = mean.astype(np.float32)
        self.std = std.astype(np.float32)
        self.device = torch.device(device)
        sample = tuple(int(d) for d in source.shape[1:])
        self.out_shape = sample if out_shape is None else out_shape
        self.shape = torch.Size((len(self.rows), *self.out_shape))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: torch.Tensor | slice) -> torch.Tensor:
        index = key if isinstance(key, slice) else key.detach().cpu().numpy()
        picked = self.rows[index]
        raw = self.source.take(picked)
        batch = ((raw.astype(np.float32, copy=False) - self.mean) / self.std).astype(
            np.float32, copy=False
        )
        tensor = torch.from_numpy(batch.reshape(len(picked), *self.out_shape))
        return tensor.to(self.device, non_blocking=self.device.type == "cuda")

    def subset(self, positions: np.ndarray) -> FileRows:
        """The rows at `positions` of this split (e.g. a learning curve's fraction)."""
        return FileRows(
            self.source, self.rows[positions], self.mean, self.std, self.device, self.out_shape
        )


Rows = torch.Tensor | FileRows
