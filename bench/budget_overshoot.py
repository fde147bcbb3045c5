"""How many trials past the budget do concurrent workers run?

Baseline: Optuna's recipe, `study.optimize(..., callbacks=[MaxTrialsCallback(n)])` in every
worker process. Ours: `service.scheduling.claims.claim_slot` before each trial. Both run the
same cheap objective on the same database; the benchmark prints finished-trial counts against the
budget, and our throughput as a ratio of the baseline's (same process, same machine).

    python bench/budget_overshoot.py [--workers 8] [--n-trials 20] [--repeats 5]
    HPO_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test python bench/...
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import tempfile
import time
import uuid
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

OBJECTIVE_SECONDS = 0.05  # a short trial makes the race window relatively large
STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1, 1)
    time.sleep(OBJECTIVE_SECONDS * random.uniform(0.5, 1.5))
    return x * x


def optuna_worker(url: str, name: str, n_trials: int, ready: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from service.core.optuna_storage import get_storage

    study = optuna.load_study(study_name=name, storage=get_storage(url))
    ready.wait()  # start the clock after imports and connections, in every process at once
    study.optimize(objective, callbacks=[MaxTrialsCallback(n_trials, states=STATES)])


def claim_worker(url: str, study_id: int, ready: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from service.core.db.engine import session_scope
    from service.core.optuna_storage import get_storage
    from service.scheduling.claims import attach_trial, claim_slot, finish_record
    from service.studies.service import get_study_row

    with session_scope(url) as session:
        row = get_study_row(session, study_id)
    study = optuna.load_study(study_name=f"hpo:{row.name}", storage=get_storage(url))
    ready.wait()
    while (claim := claim_slot(url, study_id, None)) is not None:
        trial = study.ask()
        attach_trial(url, claim.record_id, trial._trial_id, trial.number)
        study.tell(trial, objective(trial))
        finish_record(url, claim.record_id, "complete")


def run_processes(target: Any, args: tuple[object, ...], workers: int) -> float:
    """Seconds from the moment every process is ready until the last one exits."""
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(workers + 1)
    procs = [ctx.Process(target=target, args=(*args, ready)) for _ in range(workers)]
    for p in procs:
        p.start()
    ready.wait()
    started = time.perf_counter()
    for p in procs:
        p.join()
    return time.perf_counter() - started


def finished(url: str, optuna_name: str, n_trials: int) -> tuple[int, float]:
    """(finished trials, seconds from the first start until the n_trials-th finish)."""
    from service.core.optuna_storage import get_storage

    study = optuna.load_study(study_name=optuna_name, storage=get_storage(url))
    trials = study.get_trials(deepcopy=False, states=STATES)
    first = min(t.datetime_start for t in trials if t.datetime_start)
    ends = sorted(t.datetime_complete for t in trials if t.datetime_complete)
    return len(trials), (ends[n_trials - 1] - first).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--n-trials", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    from service.core.db.engine import session_scope
    from service.core.db.migrate import upgrade
    from service.studies.service import create_study
    from service.studies.spec import StudySpec

    url = os.environ.get("HPO_BENCH_DATABASE_URL") or (f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    upgrade(url)
    print(f"{args.workers} worker processes, n_trials={args.n_trials}, {args.repeats} runs")
    base_counts, our_counts, base_time, our_time = [], [], 0.0, 0.0
    base_budget_s, our_budget_s = 0.0, 0.0
    for _ in range(args.repeats):
        name = f"bench-{uuid.uuid4().hex[:8]}"
        optuna.create_study(study_name=name, storage=url)
        base_time += run_processes(optuna_worker, (url, name, args.n_trials), args.workers)
        count, seconds = finished(url, name, args.n_trials)
        base_counts.append(count)
        base_budget_s += seconds

        spec = StudySpec.model_validate(
            {
                "name": f"ours-{name}",
                "dataset": {"name": "moons"},
                "budget": {"n_trials": args.n_trials},
            }
        )
        with session_scope(url) as session:
            study_id = create_study(session, spec).id
        our_time += run_processes(claim_worker, (url, study_id), args.workers)
        count, seconds = finished(url, f"hpo:{spec.name}", args.n_trials)
        our_counts.append(count)
        our_budget_s += seconds

    print(f"MaxTrialsCallback finished trials per run: {base_counts}")
    print(f"claim_slot        finished trials per run: {our_counts}")
    print(
        f"overshoot: baseline max +{max(base_counts) - args.n_trials}, ours max "
        f"+{max(our_counts) - args.n_trials}"
    )
    print(
        "time until n_trials trials had finished, ours / baseline: "
        f"{our_budget_s / base_budget_s:.2f}"
    )
    print(f"wall time until every worker exited, ours / baseline: {our_time / base_time:.2f}")


if __name__ == "__main__":
    main()
