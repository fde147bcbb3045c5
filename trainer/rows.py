"""A split's samples read from a memory-mapped array instead of held as a tensor.

`MappedRows` stands where `TensorData` otherwise holds a tensor (`x_train`, `x_val`,
`x_test`) and answers what the training loop asks of one: `shape`, `device`, and indexing
by a tensor of row numbers (a mini-batch) or a slice (an evaluation chunk), which gathers
just those rows from the file's mapping, standardizes them, (x - mean) / std with the
training split's statistics, as float32 and puts them on the device. So the process holds
one mini-batch of the file at a time, never a copy of it.

The mapping's pages a process has read count in its resident set until released: after
every `release_bytes` of pages read (a scattered row counts as a page), the mapping is
advised `MADV_DONTNEED` (Linux, macOS), which drops them from the process (they stay in the
kernel's page cache, shared and reclaimable, and come back on the next read without disk
I/O while cached).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

import numpy as np
import torch

RELEASE_BYTES = 64 * 2**20


@dataclass
class MappedArray:
    """An array of a file mapped read-only: `array` is a view of `mapping`, which stays
    open as long as this object lives."""

    mapping: mmap.mmap
    array: np.ndarray
    release_bytes: int = RELEASE_BYTES
    _read: int = field(default=0, repr=False)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """A copy of `array[rows]` (rows: int64 row numbers, any order)."""
        out: np.ndarray = self.array[rows]
        # a scattered row brings its whole page in: count pages, not bytes
        row_bytes = out.nbytes // max(len(rows), 1)
        self._read += len(rows) * max(row_bytes, mmap.PAGESIZE)
        if self._read >= self.release_bytes:
            self.release()
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        """`array[start:stop]`, a view of the mapping (read when used)."""
        out: np.ndarray = self.array[start:stop]
        self._read += out.nbytes
        if self._read >= self.release_bytes:
            self.release()
        return out

    def release(self) -> None:
        """Drop the pages read so far from this process's resident set."""
        self._read = 0
        if hasattr(mmap, "MADV_DONTNEED"):
            self.mapping.madvise(mmap.MADV_DONTNEED)


class MappedRows:
    """The rows `rows` of a mapped array (n, *sample_shape), standardized on read and
    placed on `device`; indexing gives a float32 tensor (len(index), *out_shape).

    `mean`, `std`: float32, broadcastable to a sample; `out_shape`: the sample shape
    handed out (e.g. flattened), default the stored one.
    """

    def __init__(
        self,
        source: MappedArray,
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
        sample = tuple(int(d) for d in source.array.shape[1:])
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

    def subset(self, positions: np.ndarray) -> MappedRows:
        """The rows at `positions` of this split (e.g. a learning curve's fraction)."""
        return MappedRows(
            self.source, self.rows[positions], self.mean, self.std, self.device, self.out_shape
        )


Rows = torch.Tensor | MappedRows
