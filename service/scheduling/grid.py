"""A grid study's points, handed out one per claim.

Optuna's `GridSampler` picks an unvisited point when a trial starts, independently in each
worker process: two workers can pick the same point, and once the grid is used up its
`after_trial` calls `Study.stop()`, which raises outside `optimize()`. Here the claim hands
out the points instead: point `i` of a fixed order is the `i`-th grid claim of the study,
taken in the claim's transaction (`scheduling.claims`), so each point runs once however many
workers there are, and a claim after the last point is refused.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.studies.search.space import grid_values
from service.studies.spec import StudySpec


def grid_size(spec: StudySpec) -> int | None:
    """How many points the study's grid has; None when its sampler is not the grid."""
    if spec.sampler.name != "grid":
        return None
    return math.prod(len(values) for values in grid_values(spec).values())


def grid_point(spec: StudySpec, index: int, seed: int) -> dict[str, Any]:
    """The `index`-th point (0-based, < `grid_size`) of the grid in the order `seed` shuffles
    it to (every worker computes the same order, so a study given fewer trials than points
    still samples the whole grid evenly). Raises IndexError past the last point."""
    grid = grid_values(spec)
    size = math.prod(len(values) for values in grid.values())
    if not 0 <= index < size:
        raise IndexError(f"grid point {index} of {size}")
    flat = int(np.random.default_rng(seed).permutation(size)[index])
    point: dict[str, Any] = {}
    for name, values in reversed(grid.items()):  # mixed radix, the last parameter fastest
        flat, digit = divmod(flat, len(values))
        point[name] = values[digit]
    return {name: point[name] for name in grid}
