"""A trial's coordination cost against the number of finished trials already in the study.

For each sampler and each N, a study gets N finished trials written straight into Optuna's
tables (`bulk_fill_optuna.fill`: executemany inserts, 10 intermediate values each, 30% pruned part
way), then one real `hpo worker --until-idle` process (the CLI, in a subprocess) runs
`--trials` 10-epoch digits trials of it with the median pruner. Per trial:

    coordination = (its finish - the previous trial's finish) - its training time

(the cycle of the claim loop: listing studies, claim, load, ask, per-epoch curve write +
report + prune decision, tell, record, diagnosis), training time being the sum of the epochs'
`epoch_seconds` curve points. The worker's first trial also pays the process's first read of
the study (Optuna's study, the pruner's per-step values, the sampler's bounded history) and is
reported apart as `first`; `steady` is the median over the others. Ratios are against the
smallest N of the same run and backend.

    python bench/coordination_scale.py [--sizes 1000,10000,100000] [--samplers random,tpe]
    HPO_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \
        python bench/coordination_scale.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

from bulk_fill_optuna import fill


def spec(name: str, sampler: str, n_trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": "digits", "seed": 0},
        "objective": {"metric": "val_accuracy", "max_epochs": epochs},
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
        },
        "fixed": {"hidden_layers": 1, "hidden_units": 64, "optimizer": "adam"},
        "sampler": {"name": sampler, "seed": 0},
        "pruner": {"name": "median"},
        "budget": {"n_trials": n_trials},
    }


def make_study(url: str, sampler: str, n: int, n_trials: int, epochs: int) -> tuple[str, int]:
    import optuna

    from service.core.db.engine import session_scope
    from service.studies.service import create_study, get_study_row
    from service.studies.spec import StudySpec

    name = f"scale-{sampler}-{n}-{uuid.uuid4().hex[:6]}"
    with session_scope(url) as session:
        created = create_study(
            session, StudySpec.model_validate(spec(name, sampler, n_trials, epochs))
        )
        study_id = created.id
        optuna_id = get_study_row(session, study_id).optuna_study_id
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
        "batch_size": optuna.distributions.CategoricalDistribution([32, 64, 128]),
    }
    # Poor curves (accuracy 0..0.1, chance is 0.1): new trials (digits reach ~0.9) are almost
    # never pruned, so every trial runs every epoch (comparable work at each N), yet the
    # median rule is evaluated at every epoch.
    fill(url, optuna_id, n, dists, epochs=epochs, values=(0.0, 0.1), seed=n)
    return name, study_id


def run_worker(url: str, name: str) -> float:
    """Run `hpo worker --until-idle` on the study; seconds from start to exit."""
    hpo = Path(sys.executable).with_name("hpo")
    env = dict(os.environ, HPO_DATABASE_URL=url, HPO_LOG_LEVEL="warning")
    t = time.perf_counter()
    subprocess.run(
        [
            str(hpo),
            "worker",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--until-idle",
            "--studies",
            name,
        ],
        env=env,
        check=True,
    )
    return time.perf_counter() - t


def per_trial(url: str, study_id: int) -> tuple[float, float, float, int]:
    """(first trial's coordination, median steady coordination, mean training, pruned)."""
    from sqlalchemy import func, select

    from service.core.db.engine import session_scope
    from service.core.db.models import CurvePoint, TrialRecord

    with session_scope(url) as session:
        records = session.execute(
            select(
                TrialRecord.optuna_trial_id,
                TrialRecord.started_at,
                TrialRecord.finished_at,
                TrialRecord.state,
            )
            .where(TrialRecord.study_id == study_id)
            .order_by(TrialRecord.finished_at)
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
    first = (records[0].finished_at - records[0].started_at).total_seconds()
    coord = [first - float(training[records[0].optuna_trial_id])]
    for prev, r in itertools.pairwise(records):
        cycle = (r.finished_at - prev.finished_at).total_seconds()
        coord.append(cycle - float(training[r.optuna_trial_id]))
    trains = [float(training[r.optuna_trial_id]) for r in records]
    pruned = sum(r.state == "pruned" for r in records)
    return coord[0], statistics.median(coord[1:]), statistics.mean(trains), pruned


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--samplers", default="random,tpe")
    ap.add_argument("--trials", type=int, default=8, help="trials the worker runs per study")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    from service.core.db.migrate import upgrade

    url = os.environ.get("HPO_BENCH_DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade(url)
    backend = url.split(":", 1)[0].split("+", 1)[0]
    print(
        f"{backend}: one `hpo worker`, {args.trials} digits trials of {args.epochs} epochs per "
        f"study, median pruner, cores={os.cpu_count()}"
    )
    print(
        f"{'sampler':>7} {'N':>7} {'fill':>7} {'first':>8} {'steady':>8} {'x N0':>6} "
        f"{'training':>8} {'pruned':>6}"
    )
    for sampler in args.samplers.split(","):
        base = None
        for n in sizes:
            t = time.perf_counter()
            name, study_id = make_study(url, sampler, n, args.trials, args.epochs)
            filled = time.perf_counter() - t
            run_worker(url, name)
            first, steady, train, pruned = per_trial(url, study_id)
            base = base or steady
            print(
                f"{sampler:>7} {n:>7} {filled:>6.1f}s {first * 1000:>6.0f}ms "
                f"{steady * 1000:>6.0f}ms {steady / base:>6.2f} {train * 1000:>6.0f}ms "
                f"{pruned:>6}",
                flush=True,
            )


if __name__ == "__main__":
    main()
