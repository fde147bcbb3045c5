"""What the service tells diagnosis about a trial: its dataset's classes and validation rows
(built-in and uploaded datasets, on SQLite and PostgreSQL) and, under early stopping, the
epoch whose weights it kept."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.diagnoses import SplitFacts, kept_epoch, split_facts
from service.core.db.engine import session_scope
from service.datasets.files import ParsedDataset
from service.datasets.service import create_dataset
from service.datasets.spec import DatasetSpec
from tests.conftest import unique
from trainer.curve_stats import early_stop
from trainer.data import load_dataset, split_and_standardize


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "digits"},
        {"name": "digits", "val_fraction": 0.5, "test_fraction": 0.3},
        {"name": "moons", "n_samples": 200},
    ],
)
def test_a_builtin_dataset_gives_its_classes_and_validation_rows(
    spec: dict[str, object], database_url: str
) -> None:
    ds = DatasetSpec.model_validate(spec)
    split = ds.model_dump(include={"val_fraction", "test_fraction", "seed", "n_samples", "noise"})
    data = load_dataset(ds.name, **split)
    with session_scope(database_url) as session:
        facts = split_facts(session, ds)
    assert facts == SplitFacts(n_classes=data.n_classes, n_val=len(data.y_val))


@pytest.mark.parametrize(
    ("rows", "val", "test"), [(101, 0.3, 0.2), (57, 0.6, 0.0), (400, 0.1, 0.35)]
)
def test_an_uploaded_dataset_gives_its_classes_and_validation_rows(
    rows: int, val: float, test: float, database_url: str
) -> None:
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = (np.arange(rows) % 3).astype(np.int64)
    name = unique("facts")
    with session_scope(database_url) as session:
        create_dataset(session, name, ParsedDataset(x, y, ["a", "b", "c"], "npz"), None)
    ds = DatasetSpec(name=name, val_fraction=val, test_fraction=test)
    with session_scope(database_url) as session:
        facts = split_facts(session, ds)
    splits = split_and_standardize(x, y, val_fraction=val, test_fraction=test, seed=0)
    assert facts == SplitFacts(n_classes=3, n_val=len(splits.y_val))
    with session_scope(database_url) as session:
        assert split_facts(session, DatasetSpec(name=unique("gone"))) == SplitFacts()


def test_the_kept_epoch_is_the_best_one_only_under_early_stopping() -> None:
    curves = {"val_loss": [1.0, 0.6, 0.5, 0.55, 0.52, 0.58, 0.6], "val_accuracy": [0.5] * 7}
    assert kept_epoch({}, curves, "val_loss") is None
    assert kept_epoch({"early_stopping_patience": 0}, curves, "val_loss") is None
    assert kept_epoch({"early_stopping_patience": 4}, curves, "val_loss") == 3
    assert early_stop(curves["val_loss"], 4) == (7, 3)
    # min_delta: 0.5 is not 0.2 better than 0.6, so epoch 2 stays the best.
    config = {"early_stopping_patience": 4, "early_stopping_min_delta": 0.2}
    assert kept_epoch(config, curves, "val_loss") == 2
    assert kept_epoch({"early_stopping_patience": 2}, curves, "val_accuracy") == 1
