"""Uploaded datasets over a real server and database: validation before storage, one copy per
content, workers training on them, deletion rules."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from numpy.typing import NDArray
from sqlalchemy import func, select

from service.core.db.engine import session_scope
from service.core.db.models import Dataset, DatasetBlob
from service.core.settings import Settings
from service.datasets import files
from service.datasets.files import DatasetFileError, DatasetLimits, parse_dataset
from service.datasets.splits import CACHE_SUBDIR
from service.worker.process import WorkerProcess
from tests.conftest import backends, tiny_spec, unique
from tests.dataset_files import (
    MIB,
    csv_bytes,
    npy_header,
    npz_bytes,
    npz_member,
    npz_of_members,
    parquet_bomb,
    parquet_bytes,
    parquet_text_bomb,
    small_xy,
    zip_bomb,
)
from tests.private_db import module_database

MAX_REQUEST = 512 * 1024
MAX_DATASET = 4 * 2**20


@pytest.fixture(scope="module", params=backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This module's own database (see tests/private_db.py)."""
    yield from module_database(request, tmp_path_factory)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        max_request_bytes=MAX_REQUEST,
        max_dataset_bytes=MAX_DATASET,
        worker_poll_seconds=0.05,
        heartbeat_seconds=0.5,
        torch_threads=1,
    )


def upload(
    client: httpx.Client, name: str, filename: str, content: bytes, target: str | None = None
) -> httpx.Response:
    form = {"name": name} | ({"target": target} if target else {})
    return client.post("/api/datasets", data=form, files={"file": (filename, content)})


def counts(url: str) -> tuple[int, int]:
    with session_scope(url) as session:
        n_sets = session.scalar(select(func.count()).select_from(Dataset)) or 0
        n_blobs = session.scalar(select(func.count()).select_from(DatasetBlob)) or 0
    return n_sets, n_blobs


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


X, Y = small_xy()
GOOD_NPZ = npz_bytes(X=X, y=Y)
XNAN = X.copy()
XNAN[7, 2] = np.nan

BadFile = tuple[str, Callable[[], bytes], str | None, int, str, str]
# (filename, content, target, status, field, words of the reason)
BAD_FILES: dict[str, BadFile] = {
    "truncated npz": (
        "d.npz",
        lambda: GOOD_NPZ[: len(GOOD_NPZ) // 2],
        None,
        422,
        "file",
        "npz",
    ),
    "npz without y": ("d.npz", lambda: npz_bytes(X=X), None, 422, "file", "missing ['y']"),
    "npz without X": ("d.npz", lambda: npz_bytes(y=Y), None, 422, "file", "missing ['X']"),
    "object arrays": (
        "d.npz",
        lambda: npz_bytes(X=np.array([[1, "a"]] * 60, dtype=object), y=Y),
        None,
        422,
        "file",
        "python objects",
    ),
    "zip bomb over the cap": (
        "d.npz",
        lambda: zip_bomb(16 * MIB),
        None,
        422,
        "file",
        "over this service's cap of 4194304 (HPO_MAX_DATASET_BYTES)",
    ),
    "zip bomb under the cap": (  # 3 MiB from 3 KB: the compression ratio refuses it
        "d.npz",
        lambda: zip_bomb(3 * MIB),
        None,
        422,
        "file",
        "HPO_MAX_DATASET_COMPRESSION_RATIO",
    ),
    "zip bomb whose directory lies": (  # the .npy header's size is checked before reading
        "d.npz",
        lambda: zip_bomb(3 * MIB, declared=64 * 1024),
        None,
        422,
        "file",
        "array 'X' (3072, 256) float32 needs 3145728 bytes uncompressed",
    ),
    "npy header promising more than the data": (
        "d.npz",
        lambda: npz_of_members(X=npy_header((60, 5)) + X[:30].tobytes(), y=npz_member(Y)),
        None,
        422,
        "file",
        "array 'X' ends after 600 of its 1200 bytes",
    ),
    "npy data beyond its header": (
        "d.npz",
        lambda: npz_of_members(X=npy_header((60, 5)) + X.tobytes() * 50, y=npz_member(Y)),
        None,
        422,
        "file",
        "array 'X' holds more data than its header declares",
    ),
    "complex X": (
        "d.npz",
        lambda: npz_bytes(X=X.astype(np.complex64), y=Y),
        None,
        422,
        "file",
        "has dtype complex64; only numeric arrays",
    ),
    "csv missing target column": (
        "d.csv",
        lambda: csv_bytes(X, Y, target="class"),
        "label",
        422,
        "target",
        "column 'label' not found",
    ),
    "csv without a target": ("d.csv", lambda: csv_bytes(X, Y), None, 422, "target", "required"),
    "wrong delimiter": (
        "d.csv",
        lambda: csv_bytes(X, Y, sep=";"),
        "label",
        422,
        "target",
        "separated by commas",
    ),
    "text in a numeric column": (
        "d.csv",
        lambda: b"a,b,label\n1,2,0\n3,x,1\n4,5,0\n6,7,1\n",
        "label",
        422,
        "file",
        "column 'b' is not numeric",
    ),
    "empty cell": (
        "d.csv",
        lambda: b"a,b,label\n1,2,0\n3,,1\n4,5,0\n6,7,1\n",
        "label",
        422,
        "file",
        "empty values",
    ),
    "0 rows csv": ("d.csv", lambda: b"a,b,label\n", "label", 422, "file", "no rows"),
    "0 rows npz": (
        "d.npz",
        lambda: npz_bytes(X=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64)),
        None,
        422,
        "file",
        "no rows",
    ),
    "empty file": ("d.csv", lambda: b"", "label", 422, "file", "empty"),
    "1 class": (
        "d.npz",
        lambda: npz_bytes(X=X, y=np.zeros(60, np.int64)),
        None,
        422,
        "file",
        "at least 2 classes",
    ),
    "a class with 1 row": (
        "d.npz",
        lambda: npz_bytes(X=X, y=np.r_[Y[:-1], 7]),
        None,
        422,
        "file",
        "at least 2 rows",
    ),
    "mismatched lengths": (
        "d.npz",
        lambda: npz_bytes(X=X, y=Y[:-1]),
        None,
        422,
        "file",
        "X has 60 rows but y has 59",
    ),
    "NaN in X": (
        "d.npz",
        lambda: npz_bytes(X=XNAN, y=Y),
        None,
        422,
        "file",
        "NaN or infinite values (first at row 7)",
    ),
    # Continuous targets are a regression dataset (tests/test_regression.py); a constant one
    # leaves nothing to regress on.
    "constant regression target": (
        "d.npz",
        lambda: npz_bytes(X=X, y=np.full(60, 0.5)),
        None,
        422,
        "file",
        "y is constant",
    ),
    "NaN in a regression target": (
        "d.npz",
        lambda: npz_bytes(X=X, y=np.r_[np.linspace(0, 1, 59), np.nan]),
        None,
        422,
        "file",
        "y has NaN or infinite values (first at row 59)",
    ),
    "5-d X": (
        "d.npz",
        lambda: npz_bytes(X=np.zeros((60, 1, 1, 2, 2), np.float32), y=Y),
        None,
        422,
        "file",
        "got shape (60, 1, 1, 2, 2)",
    ),
    "string X": (
        "d.npz",
        lambda: npz_bytes(X=np.array([["a", "b"]] * 60), y=Y),
        None,
        422,
        "file",
        "numeric",
    ),
    # Class labels are stored and shown as text: the rule of every string a request carries.
    "npz label with a lone surrogate": (
        "d.npz",
        lambda: npz_bytes(X=np.ones((40, 3)), y=np.array(["a\ud800b", "c"] * 20)),
        None,
        422,
        "file",
        "lone surrogate U+D800",
    ),
    "npz label with NUL": (
        "d.npz",
        lambda: npz_bytes(X=np.ones((40, 3)), y=np.array(["a\x00b", "c"] * 20)),
        None,
        422,
        "file",
        "control character U+0000",
    ),
    "csv label with NUL": (
        "d.csv",
        lambda: csv_bytes(X[:40], np.array(["x\x00y", "z"] * 20)),
        "label",
        422,
        "file",
        "control character U+0000",
    ),
    "csv label with ESC": (
        "d.csv",
        lambda: csv_bytes(X[:40], np.array(["x\x1by", "z"] * 20)),
        "label",
        422,
        "file",
        "control character U+001B",
    ),
    "csv label of 200,000 characters": (
        "d.csv",
        lambda: csv_bytes(X[:6], np.array(["L" * 200_000, "z", "y"] * 2)),
        "label",
        422,
        "file",
        "200000 characters long; at most 4096",
    ),
    "parquet label with a control character": (
        "d.parquet",
        lambda: parquet_bytes({"a": X[:40, 0], "label": ["x\x07y", "z"] * 20}),
        "label",
        422,
        "file",
        "control character U+0007",
    ),
    "garbage parquet": ("d.parquet", lambda: b"PAR1 not really", "label", 422, "file", "parquet"),
    "nested parquet label": (
        "d.parquet",
        lambda: parquet_bytes({"f0": X[:, 0], "label": pa.array([[v] for v in Y.tolist()])}),
        "label",
        422,
        "file",
        "column 'label' has type list",
    ),
    "parquet label of bytes that are not text": (
        "d.parquet",
        lambda: parquet_bytes({"f0": X[:, 0], "label": pa.array([b"\xff" * (v + 1) for v in Y])}),
        "label",
        422,
        "file",
        "column 'label' holds bytes that are not UTF-8 text",
    ),
    "unknown format": ("d.txt", lambda: b"hello", None, 422, "file", "unknown format"),
    "file over the request cap": (
        "d.npz",
        lambda: npz_bytes(
            X=np.random.default_rng(0).standard_normal((2000, 40)), y=np.arange(2000) % 2
        ),
        None,
        413,
        "",
        "HPO_MAX_REQUEST_BYTES",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_is_refused_with_its_reason_and_nothing_is_stored(
    client: httpx.Client, settings: Settings, case: str
) -> None:
    filename, content, target, status, field, words = BAD_FILES[case]
    before = counts(settings.database_url)

    response = upload(client, unique("bad"), filename, content(), target)

    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if status == 422:
        assert detail[0]["loc"] == ["body", field], detail
        assert words.lower() in detail[0]["msg"].lower(), detail
    else:
        assert words in detail
    assert counts(settings.database_url) == before
    assert files_under(settings.data_dir) == []


@pytest.mark.parametrize(
    ("name", "reason"), [("digits", "built-in"), ("../x", "letters"), ("", "letters")]
)
def test_bad_name_is_422(client: httpx.Client, name: str, reason: str) -> None:
    response = upload(client, name, "d.npz", GOOD_NPZ)
    assert response.status_code == 422
    if name:
        assert response.json()["detail"][0]["loc"] == ["body", "name"]
        assert reason in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "shape",
    [(60, 7), (60, 2, 8), (60, 4, 4), (60, 3, 4, 4)],
    ids=["nxd", "nxCxL", "nxHxW", "nxCxHxW"],
)
def test_npz_shapes_are_kept(client: httpx.Client, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    name = unique("shape")
    response = upload(client, name, "d.npz", npz_bytes(X=x, y=Y))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["shape"] == list(shape)
    assert body["n_rows"] == 60 and body["n_classes"] == 3
    assert client.get(f"/api/datasets/{name}").json()["shape"] == list(shape)


def test_same_content_is_stored_once_whatever_the_format(
    client: httpx.Client, settings: Settings
) -> None:
    # Labels as strings in the CSV, integers in the Parquet and NPZ: one canonical content.
    x, y = small_xy(seed=3)
    names = ["cat", "dog", "emu"]
    csv = csv_bytes(x, [names[i] for i in y])
    table = {f"f{i}": x[:, i] for i in range(x.shape[1])} | {"label": [names[i] for i in y]}
    before = counts(settings.database_url)
    answers = [
        upload(client, unique("csv"), "d.csv", csv, "label"),
        upload(client, unique("pq"), "d.parquet", parquet_bytes(table), "label"),
        upload(client, unique("npz"), "d.npz", npz_bytes(X=x, y=np.array(names)[y])),
    ]
    for a in answers:
        assert a.status_code == 201, a.text
    bodies = [a.json() for a in answers]
    assert {b["sha256"] for b in bodies} == {bodies[0]["sha256"]}
    assert {b["source_format"] for b in bodies} == {"csv", "parquet", "npz"}
    assert bodies[0]["classes"] == names
    assert counts(settings.database_url) == (before[0] + 3, before[1] + 1)
    listed = {d["name"] for d in client.get("/api/datasets").json()}
    assert {b["name"] for b in bodies} <= listed


def test_duplicate_name_is_409_and_unknown_is_404(client: httpx.Client) -> None:
    name = unique("dup")
    assert upload(client, name, "d.npz", GOOD_NPZ).status_code == 201
    again = upload(client, name, "d.npz", GOOD_NPZ)
    assert again.status_code == 409
    assert name in again.json()["detail"]
    assert client.get("/api/datasets/nope-nope").status_code == 404
    assert client.delete("/api/datasets/nope-nope").status_code == 404


def test_spec_naming_an_unknown_dataset_is_422(client: httpx.Client) -> None:
    spec = tiny_spec(unique("s"))
    spec["dataset"] = {"name": "not-uploaded"}
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "dataset", "name"]


def test_worker_trains_on_an_uploaded_dataset_and_delete_waits_for_studies(
    client: httpx.Client, settings: Settings
) -> None:
    name = unique("blobs")
    x, y = small_xy(n=90, seed=5)
    created = upload(client, name, "d.npz", npz_bytes(X=x, y=y)).json()
    spec = tiny_spec(unique("on-upload"), n_trials=2)
    spec["dataset"] = {"name": name, "val_fraction": 0.2, "test_fraction": 0.2}
    study = client.post("/api/studies", json=spec)
    assert study.status_code == 201, study.text

    assert client.delete(f"/api/datasets/{name}").status_code == 409  # the study runs
    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    done = client.get(f"/api/studies/{study.json()['id']}").json()
    assert done["status"] == "completed", done
    assert done["counts"]["complete"] == 2
    # Well separated classes: the MLP is far above chance (1/3) after 2 epochs.
    assert done["best"]["test_accuracy"] > 0.6
    cached = settings.data_dir / CACHE_SUBDIR / f"{created['sha256']}.npz"
    assert cached.exists()

    before = counts(settings.database_url)
    assert client.delete(f"/api/datasets/{name}").status_code == 204
    assert client.get(f"/api/datasets/{name}").status_code == 404
    # Its blob went with it, unless another name shares the content.
    assert counts(settings.database_url)[0] == before[0] - 1


def test_worker_refetches_a_corrupted_cache_file(settings: Settings, client: httpx.Client) -> None:
    from service.datasets.service import load_arrays

    x, y = small_xy(seed=9)
    sha = upload(client, unique("c"), "d.npz", npz_bytes(X=x, y=y)).json()["sha256"]
    cache = settings.data_dir / CACHE_SUBDIR
    cache.mkdir(parents=True)
    (cache / f"{sha}.npz").write_bytes(b"corrupt")
    got_x, got_y = load_arrays(settings.database_url, sha, cache)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert (cache / f"{sha}.npz").read_bytes() != b"corrupt"
    assert [p.name for p in cache.iterdir()] == [f"{sha}.npz"]  # no temporary file left


def test_parquet_bomb_and_row_cap_are_refused_before_reading() -> None:
    from service.datasets.files import DatasetFileError, DatasetLimits, parse_dataset

    x, y = small_xy()
    table = {f"f{i}": x[:, i] for i in range(x.shape[1])} | {"label": y}
    limits = DatasetLimits(max_rows=50, max_features=10, max_classes=10, max_bytes=2**20)
    with pytest.raises(DatasetFileError, match="60 rows, over the cap of 50"):
        parse_dataset("d.parquet", parquet_bytes(table), "label", limits)
    tight = DatasetLimits(max_rows=100, max_features=10, max_classes=10, max_bytes=100)
    with pytest.raises(DatasetFileError, match="declares"):
        parse_dataset("d.parquet", parquet_bytes(table), "label", tight)


def test_uploaded_images_are_standardized_per_channel_and_flatten_on_request(
    client: httpx.Client, settings: Settings
) -> None:
    from service.datasets.spec import DatasetSpec
    from service.datasets.splits import load_uploaded_splits

    rng = np.random.default_rng(4)
    y = np.arange(80) % 2
    x = rng.standard_normal((80, 3, 4, 4)) * np.array([1.0, 5.0, 9.0])[None, :, None, None]
    x += np.array([10.0, -3.0, 0.5])[None, :, None, None]
    name = unique("img")
    sha = upload(client, name, "d.npz", npz_bytes(X=x, y=y)).json()["sha256"]

    splits = load_uploaded_splits(
        settings.database_url, sha, DatasetSpec(name=name), settings.data_dir
    )
    assert splits.x_train.shape[1:] == (3, 4, 4)
    assert splits.layout == "image"
    # One mean and std per channel, from the training split: each channel is centred, unit.
    per_channel = splits.x_train.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(per_channel.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(axis=1), 1.0, atol=1e-4)
    flat = load_uploaded_splits(
        settings.database_url, sha, DatasetSpec(name=name, shape="flat"), settings.data_dir
    )
    assert flat.x_train.shape[1:] == (48,)

    spec = tiny_spec(unique("s"), dataset={"name": name, "shape": "image"})
    assert client.post("/api/studies", json=spec).status_code == 201
    flat_name = unique("tab")
    upload(client, flat_name, "d.npz", GOOD_NPZ)
    bad = client.post(
        "/api/studies", json=tiny_spec(unique("s"), dataset={"name": flat_name, "shape": "image"})
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "dataset", "shape"]


LIMITS = DatasetLimits(max_rows=10_000, max_features=5000, max_classes=10, max_bytes=2**26)


def npy_v2(array: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=(2, 0))
    return buf.getvalue()


def test_npz_members_are_read_in_every_layout_numpy_writes() -> None:
    x, y = small_xy()
    compressed = io.BytesIO()
    np.savez_compressed(compressed, X=x, y=y)
    files = {
        "fortran order": npz_bytes(X=np.asfortranarray(x.reshape(60, 1, 5)), y=y),
        "big-endian": npz_bytes(X=x.astype(">f8"), y=y.astype(">i4")),
        "format 2.0": npz_of_members(X=npy_v2(x), y=npy_v2(y)),
        "compressed": compressed.getvalue(),
        "string labels": npz_bytes(X=x, y=np.array(["a", "b", "c"])[y]),
    }
    for case, data in files.items():
        parsed = parse_dataset("d.npz", data, None, LIMITS)
        np.testing.assert_array_equal(parsed.x.reshape(60, 5), x, err_msg=case)
        np.testing.assert_array_equal(parsed.y, y, err_msg=case)


def test_the_compression_ratio_applies_only_past_the_floor() -> None:
    # 1 MiB of X inflated ~1000 times: fine under a 2 MiB floor, refused under a 512 KiB one.
    bomb = zip_bomb(MIB)
    roomy = dataclasses.replace(LIMITS, ratio_floor=2 * MIB)
    assert parse_dataset("d.npz", bomb, None, roomy).x.shape == (1024, 256)
    tight = dataclasses.replace(LIMITS, ratio_floor=MIB // 2)
    with pytest.raises(DatasetFileError, match=r"times its \d+ compressed bytes"):
        parse_dataset("d.npz", bomb, None, tight)
    assert dataclasses.replace(tight, max_compression_ratio=2000).max_inflated(len(bomb)) > MIB


def test_parquet_is_measured_from_its_footer_before_decoding() -> None:
    # Run-length encoded zeros: a few KB of pages, yet Arrow holds 8 bytes a value. The
    # footer's row counts times the column widths say so before any page is decoded.
    n = 60_000
    table = {f"f{i}": np.zeros(n) for i in range(4)} | {"label": np.arange(n) % 2}
    data = parquet_bytes(table)
    tight = dataclasses.replace(LIMITS, max_rows=n, ratio_floor=5 * n * 8)
    with pytest.raises(DatasetFileError, match=r"declares \d+ bytes"):
        parse_dataset("d.parquet", data, "label", tight)
    roomy = dataclasses.replace(tight, ratio_floor=6 * n * 8)
    assert parse_dataset("d.parquet", data, "label", roomy).x.shape == (n, 4)


def test_parquet_text_is_counted_expanded_before_it_expands() -> None:
    # Two 4 KB labels (the longest a label may be) alternating over 2000 rows: an 8 KB
    # dictionary that expands to 8 MB.
    data = parquet_text_bomb(2000, 4_000)
    limits = dataclasses.replace(LIMITS, ratio_floor=MIB)
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    with pytest.raises(DatasetFileError, match="decodes to over"), arrow_pool(pool):
        parse_dataset("d.parquet", data, "label", limits)
    assert pool.max_memory() < 2 * MIB
    roomy = dataclasses.replace(limits, ratio_floor=32 * MIB)
    assert parse_dataset("d.parquet", data, "label", roomy).classes == ["a" * 4_000, "b" * 4_000]


def test_parquet_whose_footer_lies_costs_at_most_a_batch_past_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if the footer declared nothing (row counts that lie only make Arrow read fewer rows):
    # what is decoded is counted batch by batch, so Arrow's pool holds at most the cap, the
    # batch that crosses it and the reader's own buffers (about a batch more, measured).
    monkeypatch.setattr(files, "_parquet_declared", lambda meta, schema: 0)
    data = parquet_bomb(rows=100_000, features=250)  # 0.1 MB that decodes to 95 MiB
    limits = dataclasses.replace(LIMITS, max_rows=10**6, max_features=500, ratio_floor=8 * MIB)
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    with pytest.raises(DatasetFileError, match="decodes to over"), arrow_pool(pool):
        parse_dataset("d.parquet", data, "label", limits)
    assert pool.max_memory() < 8 * MIB + 4 * files.PARQUET_BATCH_BYTES, pool.max_memory()


@contextlib.contextmanager
def arrow_pool(pool: Any) -> Iterator[None]:
    """Arrow allocates from `pool` meanwhile (to measure what a read holds at its peak)."""
    default = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(default)


def wide_csv(n_columns: int, name_length: int, long_value: int = 0) -> bytes:
    """40 rows; the header is about n_columns x name_length bytes; with `long_value`, row 5
    starts with a number written with that many digits (1.000...0)."""
    rng = np.random.default_rng(0)
    names = [f"f{i:05d}_" + "n" * name_length for i in range(n_columns)]
    rows = []
    for r in range(40):
        values = [f"{v:.3f}" for v in rng.standard_normal(n_columns)]
        if r == 5 and long_value:
            values[0] = "1." + "0" * long_value
        rows.append(",".join(values) + f",{r % 2}\n")
    return (",".join(names) + ",label\n" + "".join(rows)).encode()


def test_csv_header_and_rows_longer_than_pyarrows_block_are_read() -> None:
    # Both used to fail on pyarrow's 1 MiB block: "cannot infer number of columns" for the
    # header, "straddles two block boundaries" for a row.
    data = wide_csv(2000, 600, long_value=1_200_000)
    assert data.index(b"\n") > 2**20
    parsed = parse_dataset("d.csv", data, "label", LIMITS)
    assert parsed.x.shape == (40, 2000)
    assert parsed.x[5, 0] == 1.0


def test_csv_limits_are_stated(monkeypatch: pytest.MonkeyPatch) -> None:
    data = wide_csv(2000, 600)
    few = dataclasses.replace(LIMITS, max_features=100)
    with pytest.raises(DatasetFileError, match="2001 comma-separated columns; at most 100 f"):
        parse_dataset("d.csv", data, "label", few)
    monkeypatch.setattr(files, "CSV_MAX_BLOCK_BYTES", 2**20 + 1000)  # pyarrow's int32, smaller
    with pytest.raises(DatasetFileError, match=r"a line of \d+ bytes; the CSV reader takes lines"):
        parse_dataset("d.csv", data, "label", LIMITS)
    with pytest.raises(DatasetFileError, match="no rows under a header"):
        parse_dataset("d.csv", b"\n\n\n", "label", LIMITS)
