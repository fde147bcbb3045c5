"""Train/validation/test fractions: refused only when a split could not train or evaluate
(fewer rows than classes, a class missing from a split), naming the split and the field;
small training splits are legitimate (issue 12 §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import assume, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split

from service.core.settings import Settings
from service.datasets.spec import DatasetSpec
from service.datasets.splits import surely_in_every_split
from service.worker.process import WorkerProcess
from tests.conftest import tiny_spec, unique
from tests.dataset_files import npz_bytes
from trainer.data import SplitError, split_indices, split_sizes


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        worker_poll_seconds=0.05,
        heartbeat_seconds=0.5,
        torch_threads=1,
    )


def test_a_small_training_split_is_accepted_and_trains(
    client: httpx.Client, settings: Settings
) -> None:
    """digits, 5% for training (90 rows, 10 classes): was refused by a 20% floor."""
    spec = tiny_spec(unique("small-train"), n_trials=1)
    spec["dataset"] = {"name": "digits", "val_fraction": 0.6, "test_fraction": 0.35}
    created = client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text

    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    study = client.get(f"/api/studies/{created.json()['id']}").json()
    assert study["status"] == "completed", study
    assert study["best"]["test_accuracy"] is not None


def _dataset(**fields: Any) -> dict[str, Any]:
    return fields


# (case, dataset, field, words); sizes as scikit-learn rounds them (test first, ceil).
BAD_SPLITS = [
    (
        "no training row per class",  # wine: 178 rows, 3 classes; 1 row left to train
        _dataset(name="wine", val_fraction=0.97, test_fraction=0.02),
        "dataset.val_fraction",
        "the training split would have 1 of the 178 rows, fewer than the 3 classes",
    ),
    (
        "validation smaller than the classes",  # digits: 1797 rows, 10 classes
        _dataset(name="digits", val_fraction=0.003),
        "dataset.val_fraction",
        "the validation split would have 6 of the 1797 rows, fewer than the 10 classes",
    ),
    (
        "test smaller than the classes",
        _dataset(name="moons", n_samples=20, test_fraction=0.05),
        "dataset.test_fraction",
        "the test split would have 1 of the 20 rows, fewer than the 2 classes, and every "
        "split needs each class (raise dataset.n_samples",
    ),
    (
        "no row left for training",
        _dataset(name="digits", val_fraction=0.6, test_fraction=0.4),
        "dataset",
        "val_fraction + test_fraction must be < 1",
    ),
]


@pytest.mark.parametrize(
    ("dataset", "field", "words"), [pytest.param(d, f, w, id=c) for c, d, f, w in BAD_SPLITS]
)
def test_splits_that_cannot_train_or_evaluate_are_422_naming_the_split(
    client: httpx.Client, dataset: dict[str, Any], field: str, words: str
) -> None:
    spec = tiny_spec(unique("bad-split"))
    spec["dataset"] = dataset
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    text = " | ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in errors)
    assert f"body.{field}" in text and words in text, text
    names = [s["name"] for s in client.get("/api/studies", params={"limit": 1000}).json()]
    assert spec["name"] not in names


def _upload(client: httpx.Client, x: Any, y: Any) -> str:
    name = unique("split-data")
    response = client.post(
        "/api/datasets", data={"name": name}, files={"file": ("d.npz", npz_bytes(X=x, y=y))}
    )
    assert response.status_code == 201, response.text
    return name


def test_an_uploaded_dataset_is_checked_by_its_counts_then_by_the_worker(
    client: httpx.Client, settings: Settings
) -> None:
    """Its labels stay in the database: the submission checks split sizes against its class
    count; a class missing from a split is the worker's finding, and the trial's reason."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 40 + [1] * 2)  # class 1 cannot be in 3 splits
    x = (rng.standard_normal((42, 3)) + y[:, None]).astype(np.float32)
    name = _upload(client, x, y)

    spec = tiny_spec(unique("upload-split"), n_trials=1)
    spec["dataset"] = {"name": name, "val_fraction": 0.02, "test_fraction": 0.2}
    refused = client.post("/api/studies", json=spec)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "dataset", "val_fraction"]
    assert "the validation split would have 1 of the 42 rows" in refused.text

    spec["dataset"]["val_fraction"] = 0.2
    spec["budget"]["max_failed_trials"] = 0
    created = client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text

    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    study_id = created.json()["id"]
    trials = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert trials and trials[0]["state"] == "fail", trials
    assert "class 1 has 2 rows, fewer than the 3 splits" in trials[0]["error"], trials[0]
    assert client.get(f"/api/studies/{study_id}").json()["status"] == "failed"


def test_split_sizes_are_the_ones_scikit_learn_makes() -> None:
    y = np.arange(1797) % 10
    for val, test in [(0.2, 0.2), (0.6, 0.35), (0.3, 0.0), (0.003, 0.2), (0.97, 0.02)]:
        sizes = split_sizes(len(y), val_fraction=val, test_fraction=test)
        try:
            i_train, i_val, i_test = split_indices(y, val_fraction=val, test_fraction=test, seed=0)
        except SplitError:
            assert min(sizes["training"], sizes["validation"]) < 10
            continue
        assert sizes == {"training": len(i_train), "validation": len(i_val), "test": len(i_test)}


def test_split_indices_are_the_stratified_splits_as_before() -> None:
    """The splits every existing study trained on: test first, then validation of the rest."""
    y = np.arange(300) % 3
    rows = np.arange(300)
    rest, test = train_test_split(rows, test_size=0.2, random_state=4, stratify=y)
    train, val = train_test_split(rest, test_size=0.25, random_state=4, stratify=y[rest])
    got = split_indices(y, val_fraction=0.2, test_fraction=0.2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(got, (train, val, test), strict=True))


def test_a_class_missing_from_a_split_is_named() -> None:
    """95:5 labels, 2 validation rows: stratification gives both to the larger class."""
    y = np.array([0] * 95 + [1] * 5)
    with pytest.raises(SplitError) as caught:
        split_indices(y, val_fraction=0.02, test_fraction=0.2, seed=0)
    assert caught.value.problems == [
        ("validation", "the validation split (2 rows) has no row of class 1")
    ]
    # Without a test split a class needs 2 rows, not 3.
    split_indices(np.array([0] * 20 + [1] * 2), val_fraction=0.5, test_fraction=0.0, seed=0)


@hypothesis_settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    counts=st.lists(st.integers(1, 400), min_size=2, max_size=6),
    val=st.integers(1, 90),
    test=st.integers(0, 90),
    seed=st.integers(0, 3),
)
def test_the_submission_shortcut_never_passes_a_split_missing_a_class(
    counts: list[int], val: int, test: int, seed: int
) -> None:
    """`surely_in_every_split` (counts only) says yes only where the exact split agrees."""
    assume(val + test < 100)
    y = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(seed)
    rng.shuffle(y)
    ds = DatasetSpec(name="moons", val_fraction=val / 100, test_fraction=test / 100, seed=seed)
    if surely_in_every_split(y, ds):
        event("shortcut")
        train, validation, test_rows = split_indices(
            y, val_fraction=ds.val_fraction, test_fraction=ds.test_fraction, seed=seed
        )
        for rows in (train, validation, *([test_rows] if test else [])):
            assert set(y[rows]) == set(range(len(counts)))
