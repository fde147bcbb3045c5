"""The metrics a study can optimize and the direction each must be optimized in.

One table for every kind of study: single-objective (`objective.metric`), multi-objective
(`objectives[*].metric`), classification and regression. A metric's direction is fixed by
what it measures (accuracy up, loss down); a spec that asks for the other direction is
refused with a 422 naming the field.
"""

from __future__ import annotations

from typing import Literal

from trainer.data import Task

Direction = Literal["maximize", "minimize"]

# metric name -> the direction it must be optimized in
NATURAL_DIRECTION: dict[str, Direction] = {
    "val_accuracy": "maximize",
    "val_loss": "minimize",
    "val_rmse": "minimize",
    "val_mae": "minimize",
    "val_r2": "maximize",
}

# metric name -> the only dataset task it exists for; a metric not listed fits every task.
METRIC_TASK: dict[str, Task] = {
    "val_accuracy": "classification",
    "val_rmse": "regression",
    "val_mae": "regression",
    "val_r2": "regression",
}
# The objective when the spec names none.
DEFAULT_METRIC: dict[Task, str] = {"classification": "val_accuracy", "regression": "val_rmse"}


def natural_direction(metric: str) -> Direction:
    """The direction `metric` must be optimized in. Raises KeyError for an unknown metric."""
    return NATURAL_DIRECTION[metric]


def metrics_for(task: Task) -> list[str]:
    """The metrics a study of `task` may optimize, in the table's order."""
    return [m for m in NATURAL_DIRECTION if METRIC_TASK.get(m, task) == task]


def task_problem(metric: str, task: Task, dataset: str) -> str | None:
    """Why `metric` cannot be the objective of a `task` study on `dataset`; None if it can."""
    if metric in metrics_for(task):
        return None
    return (
        f"{metric} is a {METRIC_TASK.get(metric, 'other')} metric but dataset {dataset!r} is "
        f"{task}; use one of {metrics_for(task)}"
    )
