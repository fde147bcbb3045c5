"""Multi-objective studies in the spec: `objectives: [{metric, direction}, ...]`.

A study optimizes either one `objective` (as always) or 2-3 `objectives` at once, each a
metric of `objectives.NATURAL_DIRECTION` in its natural direction; Optuna then keeps a
Pareto front instead of one best trial. For such a study:

- `objective` keeps what is not an objective: `max_epochs`, and `metric`, the per-epoch
  metric early stopping monitors and the learning-curve chart shows (default: the first of
  `objectives` recorded per epoch, e.g. `val_accuracy`).
- Samplers: the ones Optuna implements for several objectives (`nsga2`, `nsga3`, `tpe`,
  `random`, `qmc`, `gp` — Optuna 5's GPSampler uses log EHVI — and `grid`); `cmaes` is
  single-objective only and is refused at `sampler.name`.
- Pruning: Optuna's `Trial.report`/`should_prune` are single-objective only, so the pruner
  defaults to `none` and any other is refused at `pruner.name`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from service.core.errors import FieldProblem, located
from service.core.types import Strict
from service.studies.objectives import NATURAL_DIRECTION, natural_direction

MIN_OBJECTIVES, MAX_OBJECTIVES = 2, 3
SINGLE_OBJECTIVE_SAMPLERS = frozenset({"cmaes"})


class ObjectiveItem(Strict):
    """One objective of a multi-objective study; its direction defaults to the metric's."""

    metric: str = Field(max_length=64, description="one of objectives.NATURAL_DIRECTION")
    direction: Literal["maximize", "minimize"] | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in NATURAL_DIRECTION:
            raise ValueError(f"unknown metric {metric!r}; known: {sorted(NATURAL_DIRECTION)}")
        return metric

    @model_validator(mode="after")
    def _check(self) -> ObjectiveItem:
        natural = natural_direction(self.metric)
        if self.direction is None:
            self.direction = natural
        elif self.direction != natural:
            message = f"{self.metric} must be {natural}d, not {self.direction}d"
            raise located("ObjectiveItem", [FieldProblem(("direction",), message, self.direction)])
        return self


OBJECTIVES_HELP = (
    "2-3 objectives optimized together (a Pareto front) instead of `objective`'s one; "
    "`objective.max_epochs` still bounds training"
)


def objectives_problems(
    objectives: Sequence[ObjectiveItem], sampler: str, pruner: str | None
) -> list[FieldProblem]:
    """What a multi-objective spec may not hold, each at its field: a repeated metric, a
    single-objective sampler, a pruner (`pruner`: the name the user gave, None if none)."""
    problems = []
    seen: set[str] = set()
    for i, objective in enumerate(objectives):
        if objective.metric in seen:
            why = "objectives must not repeat a metric"
            problems.append(FieldProblem(("objectives", i, "metric"), why, objective.metric))
        seen.add(objective.metric)
    if sampler in SINGLE_OBJECTIVE_SAMPLERS:
        why = (
            f"the {sampler} sampler optimizes one objective only; for several use nsga2, "
            "nsga3, tpe, random, qmc, gp or grid"
        )
        problems.append(FieldProblem(("sampler", "name"), why, sampler))
    if pruner is not None and pruner != "none":
        why = (
            "Optuna does not prune multi-objective studies (Trial.report and should_prune "
            "take one objective); use pruner.name: none or leave the pruner out"
        )
        problems.append(FieldProblem(("pruner", "name"), why, pruner))
    return problems


def monitored_metric(objectives: Sequence[ObjectiveItem], per_epoch: Sequence[str]) -> str | None:
    """The first objective that is recorded per epoch (`per_epoch`), which early stopping
    then monitors; None if every objective is measured after training only."""
    return next((o.metric for o in objectives if o.metric in per_epoch), None)
