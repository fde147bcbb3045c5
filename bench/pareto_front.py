"""How long a multi-objective study's Pareto front takes to compute, with N complete trials x
E epochs of intermediate values each, on a SQLite file (trials written through Optuna's own
storage, with parameters and values as workers leave them).

Baseline, in the same process and database: Optuna's `Study.best_trials`, which loads every
trial (params, attributes, intermediate values) before filtering. Both answers are checked to
be the same trials.

    .venv/bin/python bench/pareto_front.py [--trials 5000] [--epochs 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import create_trial

from service.core.db.engine import session_scope
from service.core.db.migrate import upgrade
from service.core.optuna_storage import get_storage
from service.studies import service as study_service
from service.studies.spec import StudySpec


def build(url: str, n_trials: int, epochs: int) -> tuple[int, str]:
    spec = StudySpec.model_validate(
        {
            "name": "bench-pareto",
            "dataset": {"name": "digits"},
            "objectives": [{"metric": "val_accuracy"}, {"metric": "n_params"}],
            "space": {
                "hidden_units": {"type": "categorical", "choices": [4, 8, 16, 32, 64, 128]},
                "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            },
            "sampler": {"name": "nsga2"},
            "budget": {"n_trials": n_trials},
        }
    )
    with session_scope(url) as session:
        study_id = study_service.create_study(session, spec).id
    study = optuna.load_study(study_name="hpo:bench-pareto", storage=get_storage(url))
    rng = random.Random(0)
    dists = {
        "hidden_units": CategoricalDistribution([4, 8, 16, 32, 64, 128]),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
    }
    trials = []
    for _ in range(n_trials):
        units = rng.choice([4, 8, 16, 32, 64, 128])
        accuracy = min(1.0, 0.6 + 0.06 * units.bit_length() + rng.gauss(0, 0.03))
        trials.append(
            create_trial(
                params={"hidden_units": units, "lr": 10 ** rng.uniform(-4, -1)},
                distributions=dists,
                values=[accuracy, float(75 * units + 10)],
                intermediate_values={e: accuracy * e / epochs for e in range(1, epochs + 1)},
            )
        )
    study.add_trials(trials)
    return study_id, "hpo:bench-pareto"


def timed(fn: Callable[[], list[int]], repeat: int) -> tuple[float, list[int]]:
    """Median seconds of `repeat` calls, and the last call's answer."""
    times, out = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        study_id, name = build(url, args.trials, args.epochs)

        def ours() -> list[int]:
            with session_scope(url) as session:
                front = study_service.get_pareto(session, study_id)
            return sorted(t.trial_id for t in front.trials)

        def optunas() -> list[int]:
            study = optuna.load_study(study_name=name, storage=get_storage(url))
            return sorted(t._trial_id for t in study.best_trials)

        base, expected = timed(optunas, args.repeat)
        new, got = timed(ours, args.repeat)
        assert got == expected, (got, expected)
        print(
            f"{args.trials} trials x {args.epochs} epochs, front of {len(got)}: "
            f"Study.best_trials {base * 1000:.0f} ms, GET /pareto's computation "
            f"{new * 1000:.0f} ms ({base / new:.1f}x faster)"
        )


if __name__ == "__main__":
    main()
