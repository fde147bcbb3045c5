"""trainer.filedata: a dataset file read row by row gives the same splits, statistics and
mini-batches as the same arrays loaded whole, from an uncompressed .npz (read in place) or a
folder of .npy files; what cannot be read in place or trained on is refused with the
reason."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.data import split_and_standardize
from trainer.data_size import subsample
from trainer.filedata import DataFileError, load_file_data, locate_arrays
from trainer.loop import fit
from trainer.rows import FileRows

SPLIT: dict[str, Any] = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0, "device": "cpu"}


def arrays(n: int = 300, shape: tuple[int, ...] = (5,), seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.standard_normal((n, *shape)) + 2 * y.reshape(-1, *([1] * len(shape)))) * 10 + 3
    return x.astype(np.float32), y


def write(tmp_path: Path, kind: str, x: np.ndarray, y: np.ndarray) -> Path:
    if kind == "npz":
        np.savez(tmp_path / "d.npz", x=x, y=y)
        return tmp_path / "d.npz"
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return folder


@pytest.mark.parametrize("kind", ["npz", "folder"])
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)], ids=["tabular", "image"])
def test_mapped_splits_equal_the_in_memory_ones(
    tmp_path: Path, kind: str, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks: the statistics are merged over many chunks (Chan's update).
    monkeypatch.setattr("trainer.filedata.CHUNK_BYTES", 7 * 4 * int(np.prod(shape)))
    x, y = arrays(shape=shape)
    path = write(tmp_path, kind, x, y)
    data = load_file_data(path, val_fraction=0.2, test_fraction=0.2, seed=1, device="cpu")
    ref = split_and_standardize(
        x, y, val_fraction=0.2, test_fraction=0.2, seed=1, per_channel=len(shape) == 3
    )
    assert data.n_classes == 3 and data.layout == ("image" if len(shape) == 3 else "tabular")
    for split in ("train", "val", "test"):
        rows = getattr(data, f"x_{split}")
        assert isinstance(rows, FileRows) and rows.shape[1:] == shape
        got = rows[:]
        want = getattr(ref, f"x_{split}")
        # the mapped splits keep rows in file order; compare as sets of (row, label)
        order = np.lexsort(want.reshape(len(want), -1).T[::-1])
        got_order = np.lexsort(got.numpy().reshape(len(got), -1).T[::-1])
        np.testing.assert_allclose(got.numpy()[got_order], want[order], rtol=1e-5, atol=1e-5)
        labels = getattr(data, f"y_{split}").numpy()
        assert sorted(labels.tolist()) == sorted(getattr(ref, f"y_{split}").tolist())
    idx = torch.tensor([4, 0, 2])
    batch = data.x_train[idx]
    np.testing.assert_array_equal(batch.numpy(), data.x_train[:][idx].numpy())


def test_the_npz_is_read_in_place_not_extracted(tmp_path: Path) -> None:
    x, y = arrays()
    path = write(tmp_path, "npz", x, y)
    loc, _ = locate_arrays(path)
    raw = path.read_bytes()
    assert loc.path == path
    assert raw[loc.offset : loc.offset + x.nbytes] == x.tobytes()
    assert list(tmp_path.iterdir()) == [path]  # nothing extracted beside it


def test_a_model_trains_from_a_mapped_file(tmp_path: Path) -> None:
    x, y = arrays(n=240)
    data = load_file_data(
        write(tmp_path, "folder", x, y), val_fraction=0.25, test_fraction=0.0, seed=0, device="cpu"
    )
    cfg = TrainConfig(hidden_layers=1, hidden_units=16, max_epochs=8, batch_size=16, lr=0.03)
    result = fit(cfg, data)
    assert result.curves["val_accuracy"][-1] > 0.9
    assert "grad_norm.0" in result.curves


def test_what_cannot_be_mapped_or_trained_on_is_refused(tmp_path: Path) -> None:
    x, y = arrays()
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    with pytest.raises(DataFileError, match=r"compressed \(np.savez_compressed\)"):
        locate_arrays(tmp_path / "c.npz")
    np.savez(tmp_path / "other.npz", a=x, y=y)
    with pytest.raises(DataFileError, match="holds no array 'x'"):
        locate_arrays(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataFileError, match=r"not an \.npz file"):
        locate_arrays(tmp_path / "text.npz")
    bad = x.copy()
    bad[17, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad, y=y)
    with pytest.raises(DataFileError, match="NaN or infinite values \\(first at row 17\\)"):
        load_file_data(
            tmp_path / "nan.npz", val_fraction=0.2, test_fraction=0.2, seed=0, device="cpu"
        )
    np.savez(tmp_path / "one.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    with pytest.raises(DataFileError, match="at least 2 classes"):
        load_file_data(
            tmp_path / "one.npz", val_fraction=0.2, test_fraction=0.2, seed=0, device="cpu"
        )
    np.savez(tmp_path / "short.npz", x=x, y=y[:-1])
    with pytest.raises(DataFileError, match="x has 300 rows but y has 299"):
        load_file_data(
            tmp_path / "short.npz", val_fraction=0.2, test_fraction=0.2, seed=0, device="cpu"
        )
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:  # stored, but truncated x data
        z.writestr("x.npy", np.lib.format.header_data_from_array_1_0(x) and b"\x93NUMPY")
    with pytest.raises(DataFileError):
        locate_arrays(tmp_path / "d.npz")


def test_a_learning_curves_subsample_keeps_the_rows_in_the_file(tmp_path: Path) -> None:
    x, y = arrays(n=300)
    data = load_file_data(write(tmp_path, "npz", x, y), **SPLIT)
    half = subsample(data, 0.5, seed=0)
    assert isinstance(half.x_train, FileRows) and half.x_train.source is data.x_train.source
    assert len(half.x_train) == len(half.y_train) == round(0.5 * len(data.x_train))
    # each kept row still carries its own label
    full = {tuple(r): int(c) for r, c in zip(data.x_train[:].numpy(), data.y_train, strict=True)}
    for row, label in zip(half.x_train[:].numpy(), half.y_train, strict=True):
        assert full[tuple(row)] == int(label)
