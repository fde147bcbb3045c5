"""Compute to reach a target validation accuracy: TPE + hyperband against random search.

Both arms go through the service's own pieces, in process: the `StudySpec` a user would
post, `build_sampler(spec, claim_index)` (a fresh sampler per trial, as every worker claim
builds one), `build_pruner(spec.pruner, max_epochs)`, `suggest_params`, `train_config` and the
trainer's `fit` with an `on_epoch` callback that does what `service.worker.trial.EpochReport`
does for Optuna: `trial.report(val_accuracy, epoch)`, the early verdict (diverged / vanishing
gradients, always on in the service), then `trial.should_prune()`. The Optuna study lives in
memory; no HTTP server, database or worker process is involved, so only the search differs.

- baseline: sampler `random`, pruner `none` (every trial trains `--max-epochs` epochs unless
  the early verdict stops it);
- candidate: sampler `tpe` (the spec's default `n_startup_trials`, 10), pruner `hyperband`
  (or `--pruner successive_halving`), `min_resource` / `reduction_factor` from the flags.

Compute is epochs actually trained, summed over the study's trials in order: a pruned trial
counts the epochs it ran. A study *reaches the target* when a COMPLETE trial's told value
(the last epoch's val_accuracy: early stopping is off) is >= the target; its cost is the
epochs trained up to and including that trial. A study that never reaches it is charged its
total epochs and flagged (`N not reached`; `*` after its cost in the per-seed line). The
target of a dataset is the `--percentile`th percentile of all random-search final accuracies
of that dataset (every seed pooled), so it is a value a decent configuration reaches; it is
printed.

    nice -n 19 python bench/search_efficiency.py [--datasets digits,breast_cancer] \
        [--seeds 5] [--trials 40] [--max-epochs 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch

from service.studies.search.factories import build_pruner, build_sampler
from service.studies.search.space import suggest_params
from service.studies.spec import StudySpec, train_config
from trainer import DivergedError, EpochMetrics, TensorData, fit, load_dataset
from trainer.diagnosis import EarlyVerdict

METRIC = "val_accuracy"

# A small space with bad corners (tiny or huge learning rates, plain SGD), as users write.
SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "hidden_layers": {"type": "int", "low": 1, "high": 2},
    "hidden_units": {"type": "categorical", "choices": [8, 16, 32, 64]},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
}


@dataclass
class TrialRecord:
    """One trial of a study: epochs it trained, its state and told value (COMPLETE only)."""

    epochs: int
    state: str  # "complete", "pruned" or "fail"
    value: float | None


@dataclass
class Report:
    """The `on_epoch` callback, as `service.worker.trial.EpochReport` talks to Optuna: report
    the objective, stop on the early verdict, else ask the pruner. Counts the epochs."""

    trial: optuna.Trial
    verdict: EarlyVerdict
    epochs: int = 0

    def __call__(self, m: EpochMetrics) -> bool:
        self.epochs += 1
        self.trial.report(m.values[METRIC], m.epoch)
        if self.verdict.update(m.values) is not None:
            return True  # the service marks it pruned by diagnosis
        return self.trial.should_prune()


def make_spec(args: argparse.Namespace, dataset: str, seed: int, search: str) -> StudySpec:
    """The study a user would post: `search` is "random" (no pruning) or "tpe" (pruned)."""
    pruner: dict[str, Any] = {"name": "none"}
    if search == "tpe":
        pruner = {
            "name": args.pruner,
            "min_resource": args.min_resource,
            "reduction_factor": args.reduction_factor,
        }
    return StudySpec.model_validate(
        {
            "name": f"{dataset}-{search}-{seed}",
            "dataset": {"name": dataset},
            "objective": {"metric": METRIC, "max_epochs": args.max_epochs},
            "space": SPACE,
            "sampler": {"name": search, "seed": seed, "n_startup_trials": args.n_startup},
            "pruner": pruner,
            "budget": {"n_trials": args.trials},
        }
    )


def run_study(spec: StudySpec, data: TensorData) -> list[TrialRecord]:
    """Run `spec`'s trials one after another as a single worker would; one record each."""
    study = optuna.create_study(
        # The service's study name: hyperband assigns brackets by a hash of it (and the trial
        # number), so an unnamed study (a random name) would not repeat its own runs.
        study_name=f"hpo:{spec.name}",
        storage=optuna.storages.InMemoryStorage(),
        direction="maximize",
        sampler=build_sampler(spec, 0),
        pruner=build_pruner(spec.pruner, spec.objective.max_epochs),
    )
    records: list[TrialRecord] = []
    for claim_index in range(spec.budget.n_trials):
        study.sampler = build_sampler(spec, claim_index)  # a fresh one per claim, as workers do
        trial = study.ask()
        config = train_config(spec, suggest_params(trial, spec), trial_number=trial.number)
        report = Report(trial, EarlyVerdict(n_classes=data.n_classes, task=data.task))
        try:
            result = fit(config, data, report)
        except DivergedError:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            records.append(TrialRecord(report.epochs + 1, "fail", None))  # + the epoch it broke in
            continue
        if result.stopped_by_callback:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            records.append(TrialRecord(report.epochs, "pruned", None))
        else:
            value = result.value(METRIC)
            study.tell(trial, value)
            records.append(TrialRecord(report.epochs, "complete", value))
    return records


def epochs_to_target(records: list[TrialRecord], target: float) -> tuple[int, bool]:
    """(epochs trained until the first COMPLETE trial with value >= target, reached); when
    never reached, (all epochs trained, False)."""
    total = 0
    for r in records:
        total += r.epochs
        if r.state == "complete" and r.value is not None and r.value >= target:
            return total, True
    return total, False


def spread(costs: list[tuple[int, bool]]) -> str:
    """`median [min-max]` of the runs' costs, and how many of them never reached the target."""
    values = [c for c, _ in costs]
    missed = sum(not ok for _, ok in costs)
    flag = f"  ({missed} not reached)" if missed else ""
    return f"{statistics.median(values):7.1f} [{min(values):4d}-{max(values):4d}]{flag}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,breast_cancer", help="comma-separated")
    parser.add_argument("--seeds", type=int, default=5, help="sampler seeds 0..N-1 per arm")
    parser.add_argument("--trials", type=int, default=40, help="trials per study")
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument(
        "--pruner", choices=["hyperband", "successive_halving"], default="hyperband"
    )
    parser.add_argument(
        "--n-startup", type=int, default=None, help="TPE's random startup trials (default 10)"
    )
    parser.add_argument("--min-resource", type=int, default=1, help="epochs")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument(
        "--percentile", type=float, default=90.0, help="of random search's final accuracies"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a worker process trains
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = range(args.seeds)
    print(
        f"{args.trials} trials x {args.max_epochs} max epochs, seeds 0..{args.seeds - 1}; "
        f"candidate: tpe (n_startup {args.n_startup or 10}) + {args.pruner} "
        f"(min_resource {args.min_resource}, reduction_factor {args.reduction_factor}); "
        "baseline: random, no pruner"
    )
    rows = []
    for dataset in args.datasets.split(","):
        base = make_spec(args, dataset, 0, "random").dataset
        splits = load_dataset(
            base.name,
            val_fraction=base.val_fraction,
            test_fraction=base.test_fraction,
            seed=base.seed,
        )
        data = TensorData.from_splits(splits, "cpu")
        started = time.perf_counter()
        runs: dict[str, list[list[TrialRecord]]] = {"random": [], "tpe": []}
        for search in runs:
            for seed in seeds:
                runs[search].append(run_study(make_spec(args, dataset, seed, search), data))
        seconds = time.perf_counter() - started
        finals = [r.value for run in runs["random"] for r in run if r.value is not None]
        target = float(np.percentile(finals, args.percentile))
        costs = {s: [epochs_to_target(run, target) for run in runs[s]] for s in runs}
        totals = {s: [sum(r.epochs for r in run) for run in runs[s]] for s in runs}
        pruned = sum(r.state == "pruned" for run in runs["tpe"] for r in run)
        failed = {s: sum(r.state == "fail" for run in runs[s] for r in run) for s in runs}
        best = {s: [max((r.value or 0.0) for r in run) for run in runs[s]] for s in runs}
        ratio = statistics.median(c for c, _ in costs["random"]) / statistics.median(
            c for c, _ in costs["tpe"]
        )
        print(
            f"\n{dataset}: target val_accuracy {target:.4f} (p{args.percentile:g} of "
            f"{len(finals)} random finals; {len(data.y_val)} val rows)  [{seconds:.0f} s]"
        )
        print("  epochs to target, median [min-max] over seeds:")
        print(f"    random, no pruning : {spread(costs['random'])}")
        print(f"    tpe + {args.pruner:13}: {spread(costs['tpe'])}")
        for search in runs:
            each = " ".join(f"{c}{'' if ok else '*'}" for c, ok in costs[search])
            print(f"    {search} per seed: {each}")
        print(f"  ratio of medians (random / tpe+{args.pruner}): {ratio:.2f}x  (goal >= 3x)")
        print(
            f"  total epochs per study, median: random {statistics.median(totals['random']):.0f}"
            f", tpe {statistics.median(totals['tpe']):.0f}; tpe trials pruned {pruned}/"
            f"{args.seeds * args.trials}; failed random {failed['random']}, tpe {failed['tpe']}"
        )
        print(
            f"  best val_accuracy per study, median: random {statistics.median(best['random']):.4f}"
            f", tpe {statistics.median(best['tpe']):.4f}"
        )
        rows.append((dataset, ratio))
    print("\nsummary: " + ", ".join(f"{d} {r:.2f}x" for d, r in rows))


if __name__ == "__main__":
    main()
