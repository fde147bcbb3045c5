"""What saving the training state costs a trial (issue 16 §6).

Baseline: `fit` without checkpoints. Then the default interval (60 s: no save in a run
this short), and a save after every epoch (the most often the spec allows,
`checkpoint: {every_epochs: 1}`): serialized only (`trainer.state.state_bytes`), and stored
as the worker stores it (`service.worker.resume.save_state`: one upsert of the `checkpoint`
artifact) in a new migrated SQLite database, or one on the PostgreSQL server of
HPO_BENCH_DATABASE_URL. Prints each as a ratio of the baseline's time (same process, same
machine), the cost per save and the state's size.

    python bench/checkpoint_cost.py [--epochs 20] [--hidden-units 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from sqlalchemy import create_engine, make_url, text

from service.core.db.engine import get_engine, session_scope
from service.core.db.migrate import upgrade
from service.core.db.models import TrialRecord
from service.studies.service import create_study
from service.studies.spec import StudySpec
from service.worker.resume import save_state
from trainer import TensorData, TrainConfig, fit, load_dataset
from trainer.state import Checkpointer, TrainingState, state_bytes


def trial_in(url: str) -> int:
    """A running trial record for the checkpoints to belong to; its Optuna trial id."""
    spec = {"name": f"bench-{uuid.uuid4().hex[:8]}", "dataset": {"name": "digits"}}
    spec["budget"] = {"n_trials": 1}
    trial_id = 2**31 - 1 - int(uuid.uuid4().int % 1000)
    with session_scope(url) as session:
        study = create_study(session, StudySpec.model_validate(spec))
        session.add(
            TrialRecord(study_id=study.id, claim_index=1, state="running", optuna_trial_id=trial_id)
        )
    return trial_id


@contextmanager
def scratch_database(tmp: str) -> Iterator[str]:
    """A new, migrated database: SQLite in `tmp`, or a database of its own on the server of
    HPO_BENCH_DATABASE_URL (created and dropped here; the named database is not touched)."""
    server = os.environ.get("HPO_BENCH_DATABASE_URL")
    if server is None:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        yield url
        return
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def timed(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden-units", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = TensorData.from_splits(load_dataset("digits", seed=0), "cpu")
    config = TrainConfig(
        hidden_layers=2,
        hidden_units=args.hidden_units,
        optimizer="adam",
        batch_size=64,
        early_stopping_patience=100,  # keeps a copy of the best weights in the state
        max_epochs=args.epochs,
    )
    with tempfile.TemporaryDirectory() as tmp, scratch_database(tmp) as url:
        trial_id = trial_in(url)
        sizes: list[int] = []

        def to_bytes(state: TrainingState) -> None:
            sizes.append(len(state_bytes(state)))

        runs: dict[str, Callable[[], object]] = {
            "no checkpoint (baseline)": lambda: fit(config, data),
            "the default (every 60 s), stored": lambda: fit(
                config,
                data,
                checkpoint=Checkpointer(lambda s: save_state(url, trial_id, s), every_seconds=60),
            ),
            "every epoch, serialized": lambda: fit(
                config, data, checkpoint=Checkpointer(to_bytes, every_epochs=1)
            ),
            "every epoch, stored in the database": lambda: fit(
                config,
                data,
                checkpoint=Checkpointer(lambda s: save_state(url, trial_id, s), every_epochs=1),
            ),
        }
        fit(config, data)  # warm-up
        seconds = {name: timed(run, args.repeats) for name, run in runs.items()}
    base = seconds["no checkpoint (baseline)"]
    backend = url.split(":")[0]
    print(f"digits, MLP 2x{args.hidden_units}, adam, {args.epochs} epochs, 1 thread, {backend}")
    print(f"state size: {max(sizes) / 1024:.0f} KiB")
    for name, s in seconds.items():
        per_save = ""
        if name.startswith("every epoch"):
            per_save = f"   {(s - base) / args.epochs * 1000:6.1f} ms per save"
        print(f"{name:40s} {s:7.3f} s   x{s / base:.3f}{per_save}")


if __name__ == "__main__":
    main()
