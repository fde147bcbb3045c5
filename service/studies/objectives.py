"""The metrics a study can optimize and the direction each must be optimized in.

One table for every kind of study: single-objective (`objective.metric`), multi-objective
(`objectives[*].metric`), classification and regression. A metric's direction is fixed by
what it measures (accuracy up, loss down); a spec that asks for the other direction is
refused with a 422 naming the field.
"""

from __future__ import annotations

from typing import Literal

Direction = Literal["maximize", "minimize"]

# metric name -> the direction it must be optimized in
NATURAL_DIRECTION: dict[str, Direction] = {
    "val_accuracy": "maximize",
    "val_loss": "minimize",
    # measured once after training (multi-objective studies; service/worker/objectives.py)
    "n_params": "minimize",  # trainable parameters of the trained model
    "inference_ms": "minimize",  # median forward pass of one batch on the trial's device
}


def natural_direction(metric: str) -> Direction:
    """The direction `metric` must be optimized in. Raises KeyError for an unknown metric."""
    return NATURAL_DIRECTION[metric]
