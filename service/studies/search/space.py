"""Turn a study spec's search space into Optuna suggest calls."""

from __future__ import annotations

from typing import Any

import optuna

from service.studies.search.conditions import condition_holds, condition_warnings
from service.studies.search.steps import float_points
from service.studies.spec import CategoricalDist, FloatDist, IntDist, StudySpec


def suggest_params(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Suggest every searched parameter whose condition holds, in the spec's order; returns
    searched + fixed. A parameter whose `when` does not hold is neither suggested (so it is
    not in the trial's params) nor returned (so the trainer uses its default)."""
    params: dict[str, Any] = {}
    for name, dist in spec.space.items():
        if dist.when is not None and not condition_holds(dist.when, {**spec.fixed, **params}):
            continue
        if isinstance(dist, FloatDist):
            params[name] = trial.suggest_float(
                name, dist.low, dist.high, log=dist.log, step=dist.step
            )
        elif isinstance(dist, IntDist):
            params[name] = trial.suggest_int(
                name, dist.low, dist.high, log=dist.log, step=dist.step or 1
            )
        elif isinstance(dist, CategoricalDist):
            params[name] = trial.suggest_categorical(name, dist.choices)
    return {**spec.fixed, **params}


def grid_values(spec: StudySpec) -> dict[str, list[Any]]:
    """Every point of each searched parameter, for the grid sampler (which the spec refuses
    for conditional spaces: its grid is a Cartesian product). Numeric points are
    `low, low + step, …, high`: the spec requires a step that divides `high - low`."""
    grid: dict[str, list[Any]] = {}
    for name, dist in spec.space.items():
        if isinstance(dist, CategoricalDist):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDist):
            grid[name] = list(range(dist.low, dist.high + 1, dist.step or 1))
        else:
            assert dist.step is not None  # the spec refuses a grid over a float without step
            grid[name] = float_points(dist.low, dist.high, dist.step)
    return grid


def space_warnings(spec: StudySpec) -> list[str]:
    """What an accepted spec's search space does that its author may not expect, one
    sentence each (shown as `warnings` in the study's detail); empty when nothing."""
    return condition_warnings(spec.space, spec.fixed)
