"""N-D data: standardization that keeps the shape, digits as images, and the MNIST/IDX and
CIFAR-10 readers on small files this test writes in the same formats."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import datasets as skdata

from trainer.config import TrainConfig
from trainer.data import TensorData, load_dataset, split_and_standardize
from trainer.download import SOURCES, download_dataset, md5_of
from trainer.images import read_cifar_batch, read_idx
from trainer.loop import fit


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a loaded machine they cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """The IDX format: 0, 0, type code, ndim; big-endian uint32 dims; big-endian data."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}
    header = struct.pack(">BBBB", 0, 0, code[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    body = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(body))
    else:
        path.write_bytes(body)


def fake_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k images are bright in row k + 1: learnable, 10 classes (height >= 11)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 60, size=(n, *shape)).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, ..., k + 1, :] = 250
    return x, y.astype(np.uint8)


def write_mnist(
    folder: Path, *, gz: bool, n_train: int = 120, n_test: int = 40, side: int = 28
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        if n == 0:
            continue
        x, y = fake_images(n, (side, side), seed)
        write_idx(folder / f"{split}-images-idx3-ubyte", x, gz=gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", y, gz=gz)


def write_cifar(folder: Path, n_per_batch: int = 30) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    xs = []
    for i, name in enumerate(["data_batch_1", "data_batch_2", "test_batch"]):
        x, y = fake_images(n_per_batch, (3, 32, 32), seed=i)
        xs.append(x)
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in y],
            b"data": x.reshape(n_per_batch, -1),
            b"filenames": [b"f.png"] * n_per_batch,
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f, protocol=2)
    return np.concatenate(xs)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    for array in (
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-300, 5, 7], dtype=np.int16),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    ):
        path = tmp_path / "a-idx"
        write_idx(path, array, gz=gz)
        got = read_idx(path.with_name(path.name + ".gz") if gz else path)
        assert got.shape == array.shape and got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)


def test_read_idx_refuses_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    write_idx(short, np.zeros((4, 5), dtype=np.uint8), gz=False)
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"declares shape \(4, 5\)"):
        read_idx(short)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_a_folder(tmp_path: Path, gz: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(tmp_path / "fashion_mnist", gz=gz)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path))
    s = load_dataset("fashion_mnist", val_fraction=0.25, test_fraction=0.25, seed=0)
    assert s.layout == "image"
    assert s.x_train.shape[1:] == (1, 28, 28)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 160
    assert s.n_classes == 10 and s.n_features == 784
    # per-channel statistics from the training split only
    assert s.mean.shape == (1, 1, 1) and s.std.shape == (1, 1, 1)
    assert float(s.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(s.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    # the same files through an explicit path, flattened
    flat = load_dataset(
        "mnist",
        path=str(tmp_path / "fashion_mnist"),
        shape="flat",
        val_fraction=0.25,
        test_fraction=0.25,
    )
    assert flat.layout == "tabular" and flat.x_train.shape[1:] == (784,)
    np.testing.assert_array_equal(flat.x_train, s.x_train.reshape(len(s.x_train), -1))
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        load_dataset("mnist")  # $HPO_DATA_DIR/mnist does not exist


def test_cifar10_from_pickled_batches(tmp_path: Path) -> None:
    x_all = write_cifar(tmp_path / "cifar-10-batches-py")
    x, y = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "data_batch_1")
    assert x.shape == (30, 3, 32, 32) and y.shape == (30,)
    np.testing.assert_array_equal(x, x_all[:30])
    s = load_dataset("cifar10", path=str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    assert s.x_train.shape[1:] == (3, 32, 32) and s.mean.shape == (3, 1, 1)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 90
    # per channel: red, green and blue each get their own training mean and std
    train_raw = s.x_train * s.std + s.mean
    for c in range(3):
        assert float(s.mean[c, 0, 0]) == pytest.approx(float(train_raw[:, c].mean()), rel=1e-4)
        assert float(s.x_train[:, c].std()) == pytest.approx(1.0, abs=1e-4)


def test_cifar_reader_refuses_other_pickled_objects(tmp_path: Path) -> None:
    evil = tmp_path / "data_batch_1"
    with evil.open("wb") as f:
        pickle.dump({b"data": Path("/etc"), b"labels": [0]}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load pathlib"):
        read_cifar_batch(evil)


def test_digits_as_images() -> None:
    flat = load_dataset("digits", seed=0)
    img = load_dataset("digits", seed=0, shape="image")
    assert flat.layout == "tabular" and flat.x_train.shape[1:] == (64,)
    assert img.layout == "image" and img.x_train.shape[1:] == (1, 8, 8)
    np.testing.assert_array_equal(flat.y_train, img.y_train)  # the same split
    raw, _ = skdata.load_digits(return_X_y=True)
    train_raw = img.x_train * img.std + img.mean
    assert float(img.mean.reshape(-1)[0]) == pytest.approx(float(train_raw.mean()), rel=1e-4)
    assert {tuple(r) for r in np.rint(train_raw.reshape(-1, 64)).astype(int)} <= {
        tuple(r) for r in raw.astype(int)
    }
    with pytest.raises(ValueError, match="only digits can be read as images"):
        load_dataset("wine", shape="image")


def test_per_feature_standardization_keeps_nd_shape() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 3, 5)) * np.arange(1, 16).reshape(3, 5) + 7).astype(np.float32)
    y = np.arange(200) % 2
    s = split_and_standardize(x, y, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert s.layout == "signal" and s.x_train.shape[1:] == (3, 5) and s.mean.shape == (3, 5)
    np.testing.assert_allclose(s.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(s.x_train.std(axis=0), 1, atol=1e-4)


def test_fit_trains_a_cnn_on_signals_and_images(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True, n_train=300, n_test=0, side=12)  # IDX allows any size
    s = load_dataset("mnist", path=str(tmp_path), val_fraction=0.2, test_fraction=0.0)
    assert s.x_train.shape[1:] == (1, 12, 12)
    data = TensorData.from_splits(s, "cpu")
    # no augmentation here: a one-row shift would turn class k into class k ± 1
    cfg = TrainConfig(
        family="cnn",
        conv_blocks=2,
        conv_channels=8,
        hidden_layers=0,
        lr=0.01,
        max_epochs=6,
        batch_size=16,
    )
    result = fit(cfg, data)
    assert result.curves["val_accuracy"][-1] >= 0.9  # the bright row is easy to find
    x = torch.randn(90, 2, 16)
    y = (x[:, 0].mean(1) > 0).long()
    sig = TensorData(x[:60], y[:60], x[60:], y[60:], x[:0], y[:0], 2, layout="signal")
    model = fit(TrainConfig(family="cnn", hidden_layers=0, max_epochs=1), sig).model
    assert type(model.blocks[0][0]).__name__ == "Conv1d"


def _mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, files: list[Path]) -> None:
    """Serve `files` from a file:// mirror and make their MD5s the expected ones."""
    base, _ = SOURCES[name]
    monkeypatch.setitem(SOURCES, name, (base, {f.name: md5_of(f) for f in files}))
    monkeypatch.setenv("HPO_DATASET_MIRROR", files[0].parent.as_uri())


def test_download_from_a_mirror_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    write_mnist(mirror, gz=True, n_train=50, n_test=20)
    files = sorted(mirror.iterdir())
    _mirror(tmp_path, monkeypatch, "mnist", files)
    target = tmp_path / "data" / "mnist"
    s = load_dataset("mnist", path=str(target), download=True, test_fraction=0.2)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 70
    assert sorted(p.name for p in target.iterdir()) == [f.name for f in files]
    # a corrupted mirror: nothing is kept, the error names the file and both checksums
    monkeypatch.setitem(SOURCES, "fashion_mnist", (SOURCES["mnist"][0], {files[0].name: "0" * 32}))
    with pytest.raises(ValueError, match=f"{files[0].name}: MD5 [0-9a-f]{{32}} does not match"):
        download_dataset("fashion_mnist", tmp_path / "fm")
    assert list((tmp_path / "fm").iterdir()) == []


def test_download_unpacks_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path / "src" / "cifar-10-batches-py", n_per_batch=20)
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _mirror(tmp_path, monkeypatch, "cifar10", [archive])
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "data"))
    s = load_dataset("cifar10", download=True)
    assert s.x_train.shape[1:] == (3, 32, 32)
    assert not (tmp_path / "data" / "cifar10" / archive.name).exists()  # unpacked, removed
