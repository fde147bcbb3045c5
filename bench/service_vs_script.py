"""The service against a plain Optuna script: the same 24-trial digits study, same trainer,
same database.

- script: `optuna.create_study(storage=<the database>)` and `study.optimize`, whose objective
  is the trainer's `fit` with `trial.report`/`should_prune` per epoch, on the config the
  service would build (`studies.spec.train_config`) and the same data (`worker.data`);
- service: the study submitted through `studies.service.create_study`, run by one real
  `hpo worker --until-idle` process (the CLI, in a subprocess).

Every trial trains the same network (only lr and dropout are searched; batch size fixed) and
no pruner stops any, so both do the same work. Service time is its first claim to its last
finish (steady state); the worker's cold start (process start to first claim: Python, torch,
the data) is reported apart, as is the script's (its data load, before `optimize`).

    python bench/service_vs_script.py [--trials 24] [--epochs 10]
    HPO_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench \
        python bench/service_vs_script.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def spec(name: str, n_trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": "digits", "seed": 0},
        "objective": {"metric": "val_accuracy", "max_epochs": epochs},
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        },
        "fixed": {"hidden_layers": 2, "hidden_units": 128, "batch_size": 64, "optimizer": "adam"},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
    }


def script(url: str, n_trials: int, epochs: int) -> tuple[float, float]:
    """(seconds of `optimize`, seconds of the data load before it)."""
    import optuna
    import torch

    from service.core.settings import Settings
    from service.datasets.locations import DataPlaces
    from service.studies.search.space import suggest_params
    from service.studies.spec import StudySpec, train_config
    from service.worker.data import DatasetCache
    from trainer import fit

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = StudySpec.model_validate(spec(f"script-{uuid.uuid4().hex[:6]}", n_trials, epochs))
    t = time.perf_counter()
    data = DatasetCache(url, "cpu", DataPlaces.of(Settings(database_url=url))).get(s.dataset)
    cold = time.perf_counter() - t

    def objective(trial: optuna.Trial) -> float:
        config = train_config(s, suggest_params(trial, s), trial_number=trial.number)

        def on_epoch(m: Any) -> bool:
            trial.report(m.values["val_accuracy"], m.epoch)
            return trial.should_prune()

        result = fit(config, data, on_epoch)
        return float(result.value("val_accuracy"))

    study = optuna.create_study(
        study_name=s.name,
        storage=url,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    t = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - t, cold


def service(url: str, n_trials: int, epochs: int) -> tuple[float, float]:
    """(seconds from the first claim to the last finish, the worker's cold start)."""
    from sqlalchemy import func, select

    from service.core.db.engine import session_scope
    from service.core.db.models import TrialRecord
    from service.studies.service import create_study
    from service.studies.spec import StudySpec

    name = f"service-{uuid.uuid4().hex[:6]}"
    with session_scope(url) as session:
        study_id = create_study(session, StudySpec.model_validate(spec(name, n_trials, epochs))).id
    hpo = Path(sys.executable).with_name("hpo")
    env = dict(os.environ, HPO_DATABASE_URL=url, HPO_LOG_LEVEL="warning")
    launched = datetime.now(UTC).replace(tzinfo=None)
    subprocess.run(
        [str(hpo), "worker", "--device", "cpu", "--threads", "1", "--until-idle"],
        env=env,
        check=True,
    )
    with session_scope(url) as session:
        first, last, n = session.execute(
            select(
                func.min(TrialRecord.started_at),
                func.max(TrialRecord.finished_at),
                func.count(),
            ).where(TrialRecord.study_id == study_id, TrialRecord.state == "complete")
        ).one()
    assert n == n_trials, f"{n} of {n_trials} trials completed"
    return (last - first).total_seconds(), (first - launched).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()

    from service.core.db.migrate import upgrade

    url = os.environ.get("HPO_BENCH_DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade(url)
    backend = url.split(":", 1)[0].split("+", 1)[0]
    print(f"{backend}: {args.trials} digits trials of {args.epochs} epochs, 1 torch thread")
    script_s, script_cold = script(url, args.trials, args.epochs)
    service_s, service_cold = service(url, args.trials, args.epochs)
    print(f"script  optimize {script_s:7.1f} s  (data load before it {script_cold:.1f} s)")
    print(
        f"service steady   {service_s:7.1f} s  "
        f"(worker cold start to first claim {service_cold:.1f} s)"
    )
    print(f"service / script {service_s / script_s:7.2f}")


if __name__ == "__main__":
    main()
