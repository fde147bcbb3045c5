"""The median/percentile pruning rule at O(1) per epoch (after an incremental refresh).

`optuna.pruners.PercentilePruner.prune` (and `MedianPruner`, its 50th percentile) reads every
COMPLETE trial of the study on every call and interpolates the percentile of their values at
the current step: O(N) per epoch, which grows with the study. `IndexedPercentilePruner` takes
the same decision from a `history.StepValues` (per step, the sorted values of the COMPLETE
trials, kept up to date incrementally): the percentile is two list lookups and NumPy's linear
interpolation, replicated step by step (`percentile_of_sorted`), so the decision is
bit-for-bit Optuna's (`tests/test_pruning_scale.py` compares them on random histories).

The other pruners (successive halving, hyperband) stay Optuna's own: they read the study's
trials through the worker's process-wide cached storage (`worker.study_handles`), which reads
each finished trial from the database once, but they still walk all N cached trials per
epoch in Python.
"""

from __future__ import annotations

import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from service.core.optuna_compat import percentile_rule_helpers, study_id_of
from service.studies.search.history import StepValues, history_for

_is_first_in_interval_step, _best_over_steps = percentile_rule_helpers()


def _lerp(a: float, b: float, t: float) -> float:
    """NumPy's `_lerp` (numpy/lib/_function_base_impl.py) on floats: IEEE-identical."""
    diff = b - a
    if t >= 0.5:
        return b - diff * (1 - t)
    return a + diff * t


def percentile_of_sorted(values: list[float], percentile: float) -> float:
    """`np.percentile(values, percentile)` (method "linear", Hyndman & Fan 7) of an ascending
    list without NaN, in O(1); NaN for an empty list (as `np.nanpercentile` of no values).

    The virtual index is (n - 1)·q; NumPy clamps an index at or past the last element to the
    last one with a weight of index + 1, which this keeps so that ±inf neighbours give NaN
    exactly as NumPy does.
    """
    n = len(values)
    if n == 0:
        return math.nan
    q = percentile / 100.0
    index = (n - 1) * q
    if index >= n - 1:
        return _lerp(values[-1], values[-1], index + 1.0)
    if index < 0:
        return _lerp(values[0], values[0], index)
    lower = math.floor(index)
    return _lerp(values[lower], values[lower + 1], index - lower)


def percentile_decision(
    *,
    trial: FrozenTrial,
    direction: StudyDirection,
    n_complete: int,
    steps: StepValues,
    percentile: float,
    n_startup_trials: int,
    n_warmup_steps: int,
    interval_steps: int,
    n_min_trials: int,
) -> bool:
    """`PercentilePruner.prune` with the COMPLETE trials summarised as `n_complete` and
    `steps`: True to prune `trial` (RUNNING, with its reported values)."""
    if n_complete == 0 or n_complete < n_startup_trials:
        return False
    step = trial.last_step
    if step is None or step < n_warmup_steps:
        return False
    if not _is_first_in_interval_step(
        step, trial.intermediate_values.keys(), n_warmup_steps, interval_steps
    ):
        return False
    best = float(_best_over_steps(trial, direction))
    if math.isnan(best):
        return True
    if steps.count.get(step, 0) < n_min_trials:
        return False
    if direction == StudyDirection.MAXIMIZE:
        percentile = 100 - percentile
    p = percentile_of_sorted(steps.sorted.get(step, []), percentile)
    if math.isnan(p):
        return False
    if direction == StudyDirection.MAXIMIZE:
        return best < p
    return best > p


class IndexedPercentilePruner(optuna.pruners.BasePruner):
    """`optuna.pruners.PercentilePruner` (same arguments, same decisions) reading the study's
    COMPLETE trials from the process's incremental `StudyHistory` of the database at `url`
    instead of from `study.get_trials()`. `MedianPruner` is `percentile=50`."""

    def __init__(
        self,
        url: str,
        percentile: float,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        interval_steps: int = 1,
        *,
        n_min_trials: int = 1,
    ) -> None:
        # Optuna's own validation of the arguments, and its error messages.
        optuna.pruners.PercentilePruner(
            percentile, n_startup_trials, n_warmup_steps, interval_steps, n_min_trials=n_min_trials
        )
        self.url = url
        self.percentile = percentile
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.n_min_trials = n_min_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        history = history_for(self.url, study_id_of(study), study.study_name)
        steps = history.step_values()
        return percentile_decision(
            trial=trial,
            direction=study.direction,
            n_complete=history.n_complete,
            steps=steps,
            percentile=self.percentile,
            n_startup_trials=self.n_startup_trials,
            n_warmup_steps=self.n_warmup_steps,
            interval_steps=self.interval_steps,
            n_min_trials=self.n_min_trials,
        )
