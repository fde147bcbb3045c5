"""Trials per minute with 1, 2, 4, 8 worker processes on tiny trials, and the coordination
overhead per trial (the time a trial spends outside training: claim, Optuna's load_study,
ask and tell, curve writes, finishing the record).

Each run starts N real worker processes (`WorkerProcess.run(until_idle=True)`, what `hpo
worker` runs) on a fresh study; the clock starts once all are imported and connected.
Throughput is the study's trials over the span from its first claim to its last finish;
ratios are against the 1-process run of the same invocation.

    python bench/worker_scaling.py [--workers 1,2,4,8] [--n-trials 24]
    HPO_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        python bench/worker_scaling.py
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import uuid
from typing import Any


def spec(name: str, n_trials: int) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": "moons", "n_samples": 200, "noise": 0.2},
        "objective": {"metric": "val_accuracy", "max_epochs": 2},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        "fixed": {"hidden_layers": 1, "hidden_units": 16, "batch_size": 32},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
    }


def worker(url: str, name: str, ready: Any) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from service.core.settings import Settings
    from service.worker.process import WorkerProcess

    settings = Settings(
        database_url=url, torch_threads=1, worker_poll_seconds=0.05, log_level="warning"
    )
    process = WorkerProcess(settings, [name])
    process.data_for(_dataset(name, url))  # load the data before the clock starts
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


def measure(url: str, n_workers: int, n_trials: int) -> tuple[float, float, float]:
    """(trials per minute, mean seconds per trial outside training, mean training seconds)."""
    from sqlalchemy import func, select

    from service.core.db.engine import session_scope
    from service.core.db.models import CurvePoint, TrialRecord
    from service.studies.service import create_study
    from service.studies.spec import StudySpec

    name = f"scaling-{n_workers}-{uuid.uuid4().hex[:6]}"
    with session_scope(url) as session:
        study_id = create_study(session, StudySpec.model_validate(spec(name, n_trials))).id
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(n_workers + 1)
    procs = [ctx.Process(target=worker, args=(url, name, ready)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    ready.wait()
    for p in procs:
        p.join()
    with session_scope(url) as session:
        records = session.execute(
            select(
                TrialRecord.optuna_trial_id, TrialRecord.started_at, TrialRecord.finished_at
            ).where(TrialRecord.study_id == study_id, TrialRecord.state == "complete")
        ).all()
        training = dict(
            session.execute(
                select(CurvePoint.trial_id, func.sum(CurvePoint.value))
                .where(
                    CurvePoint.metric == "epoch_seconds",
                    CurvePoint.trial_id.in_([r[0] for r in records]),
                )
                .group_by(CurvePoint.trial_id)
            ).all()
        )
    assert len(records) == n_trials, f"{len(records)} of {n_trials} trials completed"
    span = (
        max(r.finished_at for r in records) - min(r.started_at for r in records)
    ).total_seconds()
    walls = [(r.finished_at - r.started_at).total_seconds() for r in records]
    trains = [float(training[r.optuna_trial_id]) for r in records]
    outside = statistics.mean(w - t for w, t in zip(walls, trains, strict=True))
    return n_trials / span * 60.0, outside, statistics.mean(trains)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--n-trials", type=int, default=24)
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]

    from service.core.db.migrate import upgrade

    url = os.environ.get("HPO_BENCH_DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade(url)
    backend = url.split(":", 1)[0].split("+", 1)[0]
    print(
        f"{backend}: {args.n_trials} tiny trials (moons, 2 epochs) per run, cores={os.cpu_count()}"
    )
    print(
        f"{'workers':>7} {'trials/min':>10} {'x 1 worker':>10} {'outside training':>17} "
        f"{'training':>9}"
    )
    base = None
    for n in counts:
        rate, outside, train = measure(url, n, args.n_trials)
        base = base or rate
        print(
            f"{n:>7} {rate:>10.1f} {rate / base:>10.2f} {outside * 1000:>14.0f} ms "
            f"{train * 1000:>6.0f} ms"
        )


if __name__ == "__main__":
    main()
