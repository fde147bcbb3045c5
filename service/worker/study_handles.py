"""The worker's Optuna study per trial, built so that its coordination does not grow with
the study: one cached storage per database in the process, the indexed percentile rule for
the median and percentile pruners, and the spec's bounded history for TPE and GP.

Before, every trial loaded the study through a fresh `_CachedStorage` (what `load_study`
wraps an `RDBStorage` in), so the first `should_prune` or TPE ask of each trial read all N
trials again, and every later one walked them all in Python. Now:

- the storage is `optuna.storages.get_storage(rdb)` made once per study and process: a finished
  trial is read from the database once per process (Optuna's own pruners, e.g. hyperband,
  and unbounded samplers still walk all cached trials per call);
- `median`/`percentile` pruning is `search.pruning.IndexedPercentilePruner`;
- `tpe`/`gp` with `sampler.max_history` are wrapped in `search.bounded.BoundedHistorySampler`.

The cache is per process: other workers' trials are read on the next refresh (trials above
the highest id seen, plus those seen unfinished). The API keeps the plain `RDBStorage` of
`core.optuna_storage.get_storage`: it reads with aggregate SQL and must not hold every
study's trials in memory.
"""

from __future__ import annotations

from functools import lru_cache

import optuna

from service.core.optuna_storage import get_storage
from service.studies.search.bounded import BoundedHistorySampler
from service.studies.search.factories import build_pruner
from service.studies.search.pruning import IndexedPercentilePruner
from service.studies.spec import StudySpec

BOUNDED_SAMPLERS = (optuna.samplers.TPESampler, optuna.samplers.GPSampler)


@lru_cache(maxsize=64)
def cached_storage(url: str, study_name: str) -> optuna.storages.BaseStorage:
    """The process's cached Optuna storage for one study of the database at `url`.

    One per study name, not per database: Optuna's cache is keyed by study id, which SQLite
    hands out again after the study with the highest id was deleted (by the API, in another
    process); a new study under a new name never meets the old one's cached trials.
    """
    return optuna.storages.get_storage(get_storage(url))


def pruner_for(url: str, spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; median and percentile read the study through `StudyHistory`."""
    p = spec.pruner
    if p.name in ("median", "percentile"):
        percentile = 50.0 if p.name == "median" else p.percentile
        return IndexedPercentilePruner(
            url, percentile, n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    return build_pruner(p, spec.objective.max_epochs)


def open_study(url: str, spec: StudySpec, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """The spec's Optuna study in `url` with `sampler` (bounded by `sampler.max_history` for
    TPE and GP in single-objective studies) and the spec's pruner, on the process's cached
    storage. Two statements when the process has seen the study before (its id by name, and
    nothing else)."""
    # A Pareto study has no single "best" to keep: its sampler reads every trial.
    max_history = spec.sampler.max_history if spec.objectives is None else None
    if max_history is not None and isinstance(sampler, BOUNDED_SAMPLERS):
        sampler = BoundedHistorySampler(sampler, url, max_history)
    return optuna.load_study(
        study_name=f"hpo:{spec.name}",
        storage=cached_storage(url, f"hpo:{spec.name}"),
        sampler=sampler,
        pruner=pruner_for(url, spec),
    )
