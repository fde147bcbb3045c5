"""The study spec users submit, validated by pydantic (a bad spec is a 422 naming the field).

Checks that read several fields (a range's ends, a step against its range, `fixed` against
`space`, `enqueue` against `space`) run in the model validators and raise
`core.errors.located` errors: each is located at the field it blames
(``["body", "space", "lr", "step"]``), like pydantic's own field errors. The checks of a
search-space entry run in `StudySpec`'s validator, so their location is the entry's path in
the body (``space.lr.low``), without the union tag (``float``) pydantic adds to the
locations of its own errors inside an entry.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from service.core.errors import FieldProblem, located
from service.core.types import (
    INT64_MAX,
    INT64_MIN,
    MAX_COUNT,
    Int64,
    Name,
    Seed,
    ShortName,
    Strict,
    Text,
    check_text,
)
from service.datasets.spec import DatasetSpec
from service.integrations.notify import NotifySpec
from service.studies.checkpointing import CheckpointSpec
from service.studies.fusing import MAX_DEVICE_HOURS, FuseSpec
from service.studies.model_families import check_family
from service.studies.multi_objective import (
    MAX_OBJECTIVES,
    MIN_OBJECTIVES,
    OBJECTIVES_HELP,
    ObjectiveItem,
    monitored_metric,
    objectives_problems,
)
from service.studies.objectives import (
    AFTER_TRAINING,
    DEFAULT_METRIC,
    NATURAL_DIRECTION,
    natural_direction,
    task_problem,
)
from service.studies.search.conditions import condition_errors, enqueue_condition_errors
from service.studies.search.steps import n_points, on_grid, step_error
from trainer.config import TrainConfig
from trainer.data import DATASET_NAMES, builtin_task, is_image
from trainer.loop import CURVE_METRICS, REGRESSION_CURVE_METRICS
from trainer.params import PARAMS, ParamValue

# Strict's config makes the floats finite and the strings valid text of bounded length.
Scalar = (
    Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
    | StrictFloat
    | Annotated[StrictStr, AfterValidator(check_text)]
)
MAX_CHOICES = 1000
# Optuna divides a float range by its step in 28-digit decimals; past about 2**53 steps the
# points low + k·step are no longer distinct floats anyway.
MAX_FLOAT_STEPS = 1e15
MAX_TIMEOUT_SECONDS = 1e9  # about 31 years; a deadline must stay a datetime


Condition = dict[Text, list[Scalar]]
WHEN_HELP = (
    "search this parameter only when each named parameter (searched earlier in `space`, or "
    "fixed) took one of the listed values; otherwise it keeps its default"
)


class FloatDist(Strict):
    """A float range; `StudySpec` checks low < high, log and step (`_entry_problems`)."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)
    when: Condition | None = Field(None, description=WHEN_HELP)

    def contains(self, value: object) -> bool:
        """Whether a sampler could propose `value`: in [low, high] and, with a step, on its grid."""
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (self.step is None or on_grid(value, self.low, self.step))
        )


class IntDist(Strict):
    """An int range; `StudySpec` checks low < high, log and step (`_entry_problems`)."""

    type: Literal["int"]
    low: Int64
    high: Int64
    log: bool = False
    step: int | None = Field(None, ge=1, le=INT64_MAX)
    when: Condition | None = Field(None, description=WHEN_HELP)

    def contains(self, value: object) -> bool:
        """Whether a sampler could propose `value`: in [low, high] and on the step grid."""
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (self.low <= value <= self.high)
            and (value - self.low) % (self.step or 1) == 0
        )


class CategoricalDist(Strict):
    """A list of choices; `StudySpec` checks that none repeats (`_entry_problems`)."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1, max_length=MAX_CHOICES)
    when: Condition | None = Field(None, description=WHEN_HELP)

    def contains(self, value: object) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)


def _entry_problems(dist: FloatDist | IntDist | CategoricalDist) -> list[FieldProblem]:
    """What is wrong with one search-space entry on its own, each at the entry's field it
    blames (relative to the entry): low < high, log with low > 0 and no step, a step that
    divides [low, high] into a bounded number of points, choices that do not repeat."""
    if isinstance(dist, CategoricalDist):
        seen: set[str] = set()
        problems = []
        for i, choice in enumerate(dist.choices):
            if repr(choice) in seen:
                problems.append(FieldProblem(("choices", i), "choices must not repeat", choice))
            seen.add(repr(choice))
        return problems
    low, high = dist.low, dist.high
    if not (math.isfinite(low) and math.isfinite(high)):
        return [FieldProblem(("low",), "low and high must be finite", low)]
    if low >= high:
        return [FieldProblem(("low",), f"low ({low:g}) must be < high ({high:g})", low)]
    if dist.log and low <= 0:
        return [FieldProblem(("low",), f"log=true needs low > 0, got low={low:g}", low)]
    if dist.step is None:
        return []
    if dist.log:
        return [FieldProblem(("step",), "step cannot be combined with log=true", dist.step)]
    if isinstance(dist, FloatDist) and (high - low) / dist.step > MAX_FLOAT_STEPS:
        return [
            FieldProblem(
                ("step",),
                f"step ({dist.step:g}) divides [low, high] into more than {MAX_FLOAT_STEPS:g} "
                "points; use a larger step",
                dist.step,
            )
        ]
    if (e := step_error(low, high, dist.step)) is not None:
        return [FieldProblem(("step",), e, dist.step)]
    return []


DIST_TYPES = ("float", "int", "categorical")
Distribution = Annotated[FloatDist | IntDist | CategoricalDist, Field(discriminator="type")]


class ModelSpec(Strict):
    family: ShortName = Field(
        "mlp",
        description="mlp, cnn, or a family installed through the hpo.models entry points",
    )

    @field_validator("family")
    @classmethod
    def _known(cls, family: str) -> str:
        check_family(family)  # a ValueError, reported at model.family
        return family


class ObjectiveSpec(Strict):
    metric: ShortName = Field(
        "val_accuracy",
        description=f"one of {', '.join(m for m in NATURAL_DIRECTION if m not in AFTER_TRAINING)} "
        "that fits the dataset's task "
        "(default: val_accuracy for classification, val_rmse for regression)",
    )
    direction: Literal["maximize", "minimize"] | None = None
    max_epochs: int = Field(20, ge=1, le=MAX_COUNT)

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        if self.metric not in NATURAL_DIRECTION or self.metric in AFTER_TRAINING:
            # n_params and inference_ms exist only after training: early stopping and the
            # pruner need a metric of every epoch (they are objectives of Pareto studies).
            known = [m for m in NATURAL_DIRECTION if m not in AFTER_TRAINING]
            why = f"unknown metric; known: {known}"
            raise located("ObjectiveSpec", [FieldProblem(("metric",), why, self.metric)])
        natural = natural_direction(self.metric)
        if self.direction is None:
            self.direction = natural
        elif self.direction != natural:
            message = f"{self.metric} must be {natural}d, not {self.direction}d"
            raise located("ObjectiveSpec", [FieldProblem(("direction",), message, self.direction)])
        return self


# TPE and GP see every trial of a study of up to 500 finished trials; past that the most
# recent and best 500 each (search.bounded), so an ask costs as much at 100k trials as at 1k.
DEFAULT_MAX_HISTORY = 500


class SamplerSpec(Strict):
    name: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2", "nsga3"] = "tpe"
    seed: Seed | None = None
    n_startup_trials: int | None = Field(None, ge=0, le=MAX_COUNT, description="tpe and gp only")
    population_size: int | None = Field(
        None, ge=2, le=100_000, description="nsga2 and nsga3 only: trials per generation (50)"
    )
    max_history: int | None = Field(
        DEFAULT_MAX_HISTORY,
        ge=1,
        le=MAX_COUNT,
        description="tpe and gp only: the sampler reads the most recent and the best this many "
        "finished trials (null: all of them)",
    )


class PrunerSpec(Strict):
    name: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0, le=MAX_COUNT, description="median and percentile")
    n_warmup_steps: int = Field(
        0, ge=0, le=MAX_COUNT, description="median and percentile: epochs never pruned"
    )
    percentile: float = Field(25.0, gt=0, lt=100, description="percentile only")
    min_resource: int = Field(
        1, ge=1, le=MAX_COUNT, description="successive_halving and hyperband: epochs"
    )
    reduction_factor: int = Field(
        3, ge=2, le=MAX_COUNT, description="successive_halving and hyperband"
    )


class BudgetSpec(Strict):
    n_trials: int = Field(
        ge=1, le=MAX_COUNT, description="finished (complete + pruned) trials to run"
    )
    timeout_seconds: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS)
    max_failed_trials: int | None = Field(
        None,
        ge=0,
        le=MAX_COUNT,
        description="failed trials tolerated before the study fails; default n_trials",
    )
    max_parallel_trials: int | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="trials of this study running at once, at most (default: any)",
    )
    max_retries: int = Field(
        1,
        ge=0,
        le=100,
        description="re-runs, with the same parameters, of a trial whose worker died or stopped",
    )
    device_hours: float | None = Field(
        None,
        gt=0,
        le=MAX_DEVICE_HOURS,
        description="no trial starts once the study's trials used this much device time",
    )


class InitFromSpec(Strict):
    trial_id: int = Field(ge=0, le=MAX_COUNT, description="a finished trial with a saved model")
    layers: int | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="reuse its first k hidden blocks (default: all of them)",
    )
    freeze: bool = Field(False, description="keep the reused blocks' weights fixed")


class StudySpec(Strict):
    name: Name = Field(description="unique; trimmed, printable, at most 200 characters")
    dataset: DatasetSpec
    model: ModelSpec = ModelSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    objectives: list[ObjectiveItem] | None = Field(
        None, min_length=MIN_OBJECTIVES, max_length=MAX_OBJECTIVES, description=OBJECTIVES_HELP
    )
    space: dict[Text, Distribution] = Field(default_factory=dict)
    fixed: dict[Text, Scalar] = Field(default_factory=dict)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    budget: BudgetSpec
    fuse: FuseSpec = Field(FuseSpec(), description="trials a worker trains at once, fused")
    enqueue: list[dict[Text, Scalar]] = Field(default_factory=list, max_length=1000)
    init_from: InitFromSpec | None = Field(
        None, description="start every trial from a finished trial's weights (transfer learning)"
    )
    priority: int = Field(
        0, ge=-1000, le=1000, description="workers take trials of higher-priority studies first"
    )
    checkpoint: CheckpointSpec = Field(
        CheckpointSpec(), description="how often a trial saves its state for a re-run to resume"
    )
    notify: NotifySpec | None = Field(
        None, description="a webhook that receives the study's events (signed JSON POSTs)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_metric(cls, data: Any) -> Any:
        # The default objective follows the dataset's task where the spec states it or the
        # dataset is built in (an uploaded dataset's task is checked at submission).
        if not isinstance(data, dict) or not isinstance(data.get("dataset"), dict):
            return data
        objective = data.get("objective", {})
        if not isinstance(objective, dict) or "metric" in objective:
            return data
        ds = data["dataset"]
        task = ds.get("task") or (
            builtin_task(ds["name"]) if ds.get("name") in DATASET_NAMES else None
        )
        if task == "regression":
            return {**data, "objective": {**objective, "metric": DEFAULT_METRIC["regression"]}}
        return data

    @field_validator("space", mode="before")
    @classmethod
    def _typed(cls, space: Any) -> Any:
        # pydantic's own words for an entry without its tag ("Unable to extract tag using
        # discriminator 'type'") name neither the field nor what it may be.
        if isinstance(space, dict):
            untyped = [
                FieldProblem(
                    (name, "type"),
                    f"Field required: the entry's type, one of {', '.join(map(repr, DIST_TYPES))}",
                )
                for name, entry in space.items()
                if isinstance(entry, dict) and "type" not in entry
            ]
            if untyped:
                raise located("StudySpec", untyped)
        return space

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        errors: list[FieldProblem] = []
        for name, dist in self.space.items():
            errors += [
                FieldProblem(("space", name, *e.loc), e.msg, e.input)
                for e in (_space_errors(name, dist) or _entry_problems(dist))
            ]
        for name, value in self.fixed.items():
            if name in self.space:
                why = "is also in space; search it or fix it, not both"
            elif name not in PARAMS:
                why = f"unknown parameter; known: {sorted(PARAMS)}"
            elif (e := PARAMS[name].check(value)) is not None:
                why = e
            else:
                continue
            errors.append(FieldProblem(("fixed", name), why, value))
        for i, config in enumerate(self.enqueue):
            for name, value in config.items():
                if name not in self.space:
                    why = "not in space (only searched params)"
                elif not self.space[name].contains(value):
                    why = f"{value!r} is outside space.{name}"
                else:
                    continue
                errors.append(FieldProblem(("enqueue", i, name), why, value))
        errors += condition_errors(self.space, self.fixed, self.sampler.name)
        errors += enqueue_condition_errors(self.space, self.fixed, self.enqueue)
        if self.sampler.name == "grid":
            for name, dist in self.space.items():
                if isinstance(dist, FloatDist) and dist.step is None:
                    why = "the grid sampler needs a step or choices"
                    errors.append(FieldProblem(("space", name, "step"), why))
            if not errors and (points := _grid_points(self.space)) > MAX_GRID_POINTS:
                why = (
                    f"the grid sampler would enumerate {points:.3g} points (at most "
                    f"{MAX_GRID_POINTS}); use larger steps or fewer parameters"
                )
                errors.append(FieldProblem(("space",), why))
        errors += _augment_errors(self)
        task = self.dataset.builtin_task
        if task is not None:
            metric = self.objective.metric
            if (problem := task_problem(metric, task, self.dataset.name)) is not None:
                errors.append(FieldProblem(("objective", "metric"), problem, metric))
            for i, item in enumerate(self.objectives or []):
                if (problem := task_problem(item.metric, task, self.dataset.name)) is not None:
                    errors.append(FieldProblem(("objectives", i, "metric"), problem, item.metric))
        if self.objectives is not None:
            errors += self._set_up_objectives(self.objectives)
        if errors:
            raise located("StudySpec", errors)
        return self

    def _set_up_objectives(self, objectives: list[ObjectiveItem]) -> list[FieldProblem]:
        """A multi-objective study (`multi_objective`): no pruner unless one was asked for
        (refused), and early stopping monitors the first per-epoch objective unless
        `objective.metric` was given."""
        named = self.pruner.name if "name" in self.pruner.model_fields_set else None
        problems = objectives_problems(objectives, self.sampler.name, named)
        self.pruner = self.pruner.model_copy(update={"name": "none"})
        metric = monitored_metric(objectives, (*CURVE_METRICS, *REGRESSION_CURVE_METRICS))
        if "metric" not in self.objective.model_fields_set and metric is not None:
            self.objective = ObjectiveSpec.model_validate(
                {"metric": metric, "max_epochs": self.objective.max_epochs}
            )
        return problems


def _augment_errors(spec: StudySpec) -> list[FieldProblem]:
    """Augmentation is for images only: refuse it for tabular data (TECHNIQUES.md §5)."""
    if is_image(spec.dataset.name, spec.dataset.shape):
        return []
    why = f"augmentation needs image data; dataset {spec.dataset.name!r} is not images" + (
        " (digits: set dataset.shape: image)" if spec.dataset.name == "digits" else ""
    )
    dist = spec.space.get("augment")
    if isinstance(dist, CategoricalDist) and any(c != "none" for c in dist.choices):
        return [FieldProblem(("space", "augment", "choices"), why, dist.choices)]
    if (value := spec.fixed.get("augment", "none")) != "none":
        return [FieldProblem(("fixed", "augment"), why, value)]
    return []


MAX_GRID_POINTS = 100_000  # a worker builds the whole grid in memory


def _grid_points(space: dict[str, FloatDist | IntDist | CategoricalDist]) -> float:
    total = 1.0
    for dist in space.values():
        if isinstance(dist, CategoricalDist):
            total *= len(dist.choices)
        else:
            total *= n_points(dist.low, dist.high, dist.step or 1)
    return total


def _space_errors(name: str, dist: FloatDist | IntDist | CategoricalDist) -> list[FieldProblem]:
    """Whether the entry fits its parameter's domain (in the registry), each problem located
    relative to the entry."""
    param = PARAMS.get(name)
    if param is None:
        return [FieldProblem((), f"unknown parameter; known: {sorted(PARAMS)}", name)]
    allowed = {"float": ("float", "categorical"), "int": ("int", "categorical")}.get(
        param.kind, ("categorical",)
    )
    if dist.type not in allowed:
        why = f"type {dist.type!r} does not fit {param.domain()}; use {' or '.join(allowed)}"
        return [FieldProblem(("type",), why, dist.type)]
    if isinstance(dist, CategoricalDist):
        return [
            FieldProblem(("choices", i), e, v)
            for i, v in enumerate(dist.choices)
            if (e := param.check(v)) is not None
        ]
    return [
        FieldProblem((end,), e, v)
        for end, v in (("low", dist.low), ("high", dist.high))
        if (e := param.check(v)) is not None
    ]


# ---- responses ----------------------------------------------------------------------------


def load_spec(stored: dict[str, Any]) -> StudySpec:
    """Parse a stored spec (`hpo_studies.spec`, JSON) into the `StudySpec` it was accepted as.

    Every reader of a stored spec goes through here and then reads attributes, never dict
    keys, so each default lives in one place (the pydantic model).
    Raises pydantic's `ValidationError` only if the stored JSON was edited by hand.
    """
    return StudySpec.model_validate(stored)


def train_config(
    spec: StudySpec,
    params: dict[str, ParamValue],
    *,
    trial_number: int,
    max_epochs: int | None = None,
) -> TrainConfig:
    """The one way from (spec, a trial's parameters, its number) to the trainer's config.

    `params`: searched + fixed values (`suggest_params`, or a stored trial's `config`);
    `trial_number` seeds the trial (Optuna's number, 0-based); `max_epochs` defaults to the
    spec's objective. Family and monitored metric always come from the spec: a config built
    anywhere else (learning curves, transfer, diagnosis) trains the same model as the trial.
    Raises ValueError naming each parameter whose value the trainer's registry refuses.
    """
    return TrainConfig.from_params(
        params,
        max_epochs=spec.objective.max_epochs if max_epochs is None else max_epochs,
        seed=trial_number,
        monitor=spec.objective.metric,
        family=spec.model.family,
    )
