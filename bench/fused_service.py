"""End to end through the service: the same 32-trial digits study with and without
`fuse: {max_trials: 16}`, one worker process each (issue 14 §6). Prints trials per minute,
the ratio against the unfused run of the same invocation, and each run's budget accounting
(finished trials, slots used, claims, failures: they must be equal).

The digits MLP of the issue's probe (64-128-128-10, batch 64, adam, per-trial learning
rate), a random sampler (the same configurations in both runs), no pruner, 10 epochs.
Throughput is the study's trials over the span from its first claim to its last finish, the
worker's data loaded (and torch._dynamo imported) before the clock starts.

    python bench/fused_service.py [--n-trials 32] [--fuse 16] [--epochs 10]
    BENCH_LOG=info python bench/fused_service.py    # with the worker's log lines
    HPO_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        python bench/fused_service.py
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import uuid
from typing import Any


def spec(name: str, n_trials: int, fuse: int, epochs: int) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": "digits"},
        "objective": {"metric": "val_accuracy", "max_epochs": epochs},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "fixed": {
            "hidden_layers": 2,
            "hidden_units": 128,
            "batch_size": 64,
            "optimizer": "adam",
        },
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
        "fuse": {"max_trials": fuse},
    }


def worker(url: str, name: str, ready: Any) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from service.core.settings import Settings
    from service.worker.process import WorkerProcess

    settings = Settings(
        database_url=url,
        torch_threads=1,
        worker_poll_seconds=0.05,
        log_level=os.environ.get("BENCH_LOG", "warning"),
    )
    process = WorkerProcess(settings, [name])
    process.data.get(_dataset(name, url))  # load the data before the clock starts
    # What a long-running worker imported once, long ago: the first optimizer a process
    # builds imports torch._dynamo (seconds on a loaded machine).
    import torch._dynamo  # noqa: F401

    ready.wait()
    process.run(until_idle=True, install_signals=False)


def _dataset(name: str, url: str) -> Any:
    from sqlalchemy import select

    from service.core.db.engine import session_scope
    from service.core.db.models import Study
    from service.studies.service import get_study_row
    from service.studies.spec import StudySpec

    with session_scope(url) as session:
        study_id = session.scalar(select(Study.id).where(Study.name == name))
        assert study_id is not None
        return StudySpec.model_validate(get_study_row(session, study_id).spec).dataset


def measure(url: str, n_trials: int, fuse: int, epochs: int) -> tuple[float, tuple[int, ...]]:
    """(trials per minute, (finished, slots used, claims, failed)) of one run."""
    from sqlalchemy import select

    from service.core.db.engine import session_scope
    from service.core.db.models import Study, TrialRecord
    from service.studies.service import create_study
    from service.studies.spec import StudySpec

    name = f"fused-{fuse}-{uuid.uuid4().hex[:6]}"
    raw = spec(name, n_trials, fuse, epochs)
    with session_scope(url) as session:
        study_id = create_study(session, StudySpec.model_validate(raw)).id
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(2)
    proc = ctx.Process(target=worker, args=(url, name, ready))
    proc.start()
    ready.wait()
    proc.join()
    with session_scope(url) as session:
        records = session.execute(
            select(TrialRecord.started_at, TrialRecord.finished_at).where(
                TrialRecord.study_id == study_id, TrialRecord.state == "complete"
            )
        ).all()
        study = session.get(Study, study_id)
        assert study is not None
        accounting = (len(records), study.slots_used, study.n_claims, study.n_failed)
    assert len(records) == n_trials, f"{len(records)} of {n_trials} trials completed"
    span = (
        max(r.finished_at for r in records) - min(r.started_at for r in records)
    ).total_seconds()
    return n_trials / span * 60.0, accounting


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-trials", type=int, default=32)
    ap.add_argument("--fuse", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()

    from service.core.db.migrate import upgrade

    url = os.environ.get("HPO_BENCH_DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade(url)
    backend = url.split(":", 1)[0].split("+", 1)[0]
    print(
        f"{backend}: {args.n_trials} digits trials (MLP 64-128-128-10, batch 64, adam, "
        f"{args.epochs} epochs), one worker, cores={os.cpu_count()}"
    )
    print(f"{'fuse':>6} {'trials/min':>10} {'x unfused':>9}  finished/slots/claims/failed")
    base = None
    for fuse in (1, args.fuse):
        rate, accounting = measure(url, args.n_trials, fuse, args.epochs)
        base = base or rate
        print(f"{fuse:>6} {rate:>10.1f} {rate / base:>9.2f}  {'/'.join(map(str, accounting))}")


if __name__ == "__main__":
    main()
