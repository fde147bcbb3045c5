"""API schemas: the study spec (what users submit) and every response."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from service.diagnosis_schemas import Finding
from service.model_families import check_family
from service.search.conditions import condition_errors, enqueue_condition_errors
from trainer.data import DATASET_NAMES, is_image
from trainer.images import IMAGE_DATASETS
from trainer.params import PARAMS

Scalar = StrictInt | StrictFloat | StrictStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Condition = dict[str, list[Scalar]]
WHEN_HELP = (
    "search this parameter only when each named parameter (searched earlier in `space`, or "
    "fixed) took one of the listed values; otherwise it keeps its default"
)


class FloatDist(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)
    when: Condition | None = Field(None, description=WHEN_HELP)

    @model_validator(mode="after")
    def _check(self) -> FloatDist:
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def contains(self, value: object) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high


class IntDist(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int | None = Field(None, ge=1)
    when: Condition | None = Field(None, description=WHEN_HELP)

    @model_validator(mode="after")
    def _check(self) -> IntDist:
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def contains(self, value: object) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (self.low <= value <= self.high)
        )


class CategoricalDist(_Strict):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)
    when: Condition | None = Field(None, description=WHEN_HELP)

    @model_validator(mode="after")
    def _check(self) -> CategoricalDist:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError("choices must not repeat")
        return self

    def contains(self, value: object) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite")
    if low >= high:
        raise ValueError(f"low ({low:g}) must be < high ({high:g})")
    if log and low <= 0:
        raise ValueError(f"log=true needs low > 0, got low={low:g}")
    if log and step is not None:
        raise ValueError("step cannot be combined with log=true")


Distribution = Annotated[FloatDist | IntDist | CategoricalDist, Field(discriminator="type")]


class DatasetSpec(_Strict):
    name: str = Field(
        min_length=1,
        max_length=100,
        description=f"built-in: {', '.join(DATASET_NAMES)}, or an uploaded dataset's name",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    n_samples: int = Field(1000, ge=20, le=1_000_000, description="synthetic datasets only")
    noise: float = Field(0.2, ge=0, le=100, description="synthetic datasets only")
    shape: Literal["flat", "image"] | None = Field(
        None, description="flat (n, features) or image (n, c, h, w); default: the dataset's own"
    )
    path: str | None = Field(
        None, description="image datasets: their folder on the worker (default $HPO_DATA_DIR/name)"
    )
    download: bool = Field(
        False, description="image datasets: workers fetch missing files (needs network access)"
    )

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        # Other names are uploaded datasets, looked up in the database at submission.
        builtin = self.name in DATASET_NAMES
        if builtin and self.shape == "image" and not is_image(self.name, self.shape):
            raise ValueError(f"shape: {self.name!r} is tabular; only digits can be read as images")
        if self.path is not None and self.name not in IMAGE_DATASETS:
            raise ValueError(
                f"path: only image datasets {list(IMAGE_DATASETS)} are read from files"
            )
        if self.download and self.name not in IMAGE_DATASETS:
            raise ValueError(f"download: only image datasets {list(IMAGE_DATASETS)} are fetched")
        if self.val_fraction + self.test_fraction > 0.8:
            raise ValueError(
                "val_fraction + test_fraction must leave at least 20% of the rows for training"
            )
        return self


class ModelSpec(_Strict):
    family: str = Field(
        "mlp",
        description="mlp, cnn, or a family installed through the hpo.models entry points",
    )

    @field_validator("family")
    @classmethod
    def _known(cls, family: str) -> str:
        check_family(family)  # a ValueError, reported at model.family
        return family


class ObjectiveSpec(_Strict):
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    direction: Literal["maximize", "minimize"] | None = None
    max_epochs: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        natural: Literal["maximize", "minimize"] = (
            "maximize" if self.metric == "val_accuracy" else "minimize"
        )
        if self.direction is None:
            self.direction = natural
        elif self.direction != natural:
            raise ValueError(f"direction: {self.metric} must be {natural}d, not {self.direction}d")
        return self


class SamplerSpec(_Strict):
    name: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc"] = "tpe"
    seed: int | None = None
    n_startup_trials: int | None = Field(None, ge=0, description="tpe and gp only")


class PrunerSpec(_Strict):
    name: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="median and percentile")
    n_warmup_steps: int = Field(0, ge=0, description="median and percentile: epochs never pruned")
    percentile: float = Field(25.0, gt=0, lt=100, description="percentile only")
    min_resource: int = Field(1, ge=1, description="successive_halving and hyperband: epochs")
    reduction_factor: int = Field(3, ge=2, description="successive_halving and hyperband")


class BudgetSpec(_Strict):
    n_trials: int = Field(ge=1, description="finished (complete + pruned) trials to run")
    timeout_seconds: float | None = Field(None, gt=0)
    max_failed_trials: int | None = Field(
        None, ge=0, description="failed trials tolerated before the study fails; default n_trials"
    )
    max_parallel_trials: int | None = Field(
        None, ge=1, description="trials of this study running at once, at most (default: any)"
    )
    max_retries: int = Field(
        1,
        ge=0,
        le=100,
        description="re-runs, with the same parameters, of a trial whose worker died or stopped",
    )


class InitFromSpec(_Strict):
    trial_id: int = Field(ge=0, description="a finished trial with a saved model")
    layers: int | None = Field(
        None, ge=1, description="reuse its first k hidden blocks (default: all of them)"
    )
    freeze: bool = Field(False, description="keep the reused blocks' weights fixed")


class StudySpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    dataset: DatasetSpec
    model: ModelSpec = ModelSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    space: dict[str, Distribution] = Field(default_factory=dict)
    fixed: dict[str, Scalar] = Field(default_factory=dict)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    budget: BudgetSpec
    enqueue: list[dict[str, Scalar]] = Field(default_factory=list, max_length=1000)
    init_from: InitFromSpec | None = Field(
        None, description="start every trial from a finished trial's weights (transfer learning)"
    )
    priority: int = Field(
        0, ge=-1000, le=1000, description="workers take trials of higher-priority studies first"
    )

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        errors: list[str] = []
        for name, dist in self.space.items():
            errors += [f"space.{name}: {e}" for e in _space_errors(name, dist)]
        for name, value in self.fixed.items():
            if name in self.space:
                errors.append(f"fixed.{name}: is also in space; search it or fix it, not both")
            elif name not in PARAMS:
                errors.append(f"fixed.{name}: unknown parameter; known: {sorted(PARAMS)}")
            elif (e := PARAMS[name].check(value)) is not None:
                errors.append(f"fixed.{name}: {e}")
        for i, config in enumerate(self.enqueue):
            for name, value in config.items():
                if name not in self.space:
                    errors.append(f"enqueue[{i}].{name}: not in space (only searched params)")
                elif not self.space[name].contains(value):
                    errors.append(f"enqueue[{i}].{name}: {value!r} is outside space.{name}")
        errors += condition_errors(self.space, self.fixed, self.sampler.name)
        errors += enqueue_condition_errors(self.space, self.fixed, self.enqueue)
        if self.sampler.name == "grid":
            for name, dist in self.space.items():
                if isinstance(dist, FloatDist) and dist.step is None:
                    errors.append(f"space.{name}: the grid sampler needs a step or choices")
            if not errors and (points := _grid_points(self.space)) > MAX_GRID_POINTS:
                errors.append(
                    f"space: the grid sampler would enumerate {points:.3g} points (at most "
                    f"{MAX_GRID_POINTS}); use larger steps or fewer parameters"
                )
        errors += _augment_errors(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self


def _augment_errors(spec: StudySpec) -> list[str]:
    """Augmentation is for images only: refuse it for tabular data (TECHNIQUES.md §5)."""
    if is_image(spec.dataset.name, spec.dataset.shape):
        return []
    why = f"augmentation needs image data; dataset {spec.dataset.name!r} is not images" + (
        " (digits: set dataset.shape: image)" if spec.dataset.name == "digits" else ""
    )
    dist = spec.space.get("augment")
    if isinstance(dist, CategoricalDist) and any(c != "none" for c in dist.choices):
        return [f"space.augment: {why}"]
    if spec.fixed.get("augment", "none") != "none":
        return [f"fixed.augment: {why}"]
    return []


MAX_GRID_POINTS = 100_000  # a worker builds the whole grid in memory


def _grid_points(space: dict[str, FloatDist | IntDist | CategoricalDist]) -> float:
    total = 1.0
    for dist in space.values():
        if isinstance(dist, CategoricalDist):
            total *= len(dist.choices)
        else:
            step = dist.step or 1
            total *= math.floor((dist.high - dist.low) / step + 1e-9) + 1
    return total


def _space_errors(name: str, dist: FloatDist | IntDist | CategoricalDist) -> list[str]:
    param = PARAMS.get(name)
    if param is None:
        return [f"unknown parameter; known: {sorted(PARAMS)}"]
    allowed = {"float": ("float", "categorical"), "int": ("int", "categorical")}.get(
        param.kind, ("categorical",)
    )
    if dist.type not in allowed:
        return [f"type {dist.type!r} does not fit {param.domain()}; use {' or '.join(allowed)}"]
    if isinstance(dist, CategoricalDist):
        values: list[object] = list(dist.choices)
        return [f"choices: {e}" for v in values if (e := param.check(v)) is not None]
    return [
        f"{end}: {e}"
        for end, v in (("low", dist.low), ("high", dist.high))
        if (e := param.check(v)) is not None
    ]


# ---- responses ----------------------------------------------------------------------------


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# The database stores naive UTC; answers carry the zone ("...Z"), as RFC 3339 date-time wants.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class StudyCreated(BaseModel):
    id: int
    name: str
    status: str


class TrialCounts(BaseModel):
    running: int = 0
    complete: int = 0
    pruned: int = 0
    fail: int = 0
    waiting: int = 0


class BestTrial(BaseModel):
    trial_id: int
    number: int
    value: float
    params: dict[str, Any] = Field(description="the searched parameters' values")
    config: dict[str, Any] = Field(description="searched + fixed: the full configuration")
    test_accuracy: float | None


class StudySummary(BaseModel):
    id: int
    name: str
    status: str
    n_trials: int
    counts: TrialCounts
    best_value: float | None
    direction: str
    error: str | None
    created_at: UtcDatetime
    finished_at: UtcDatetime | None


class StudyDetail(StudySummary):
    spec: dict[str, Any]
    best: BestTrial | None


class TrialSummary(BaseModel):
    trial_id: int
    study_id: int
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    duration_seconds: float | None
    error: str | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    retry_of: int | None = Field(
        None, description="the trial (id) this one re-runs with the same params: its worker died"
    )
    retried_by: int | None = Field(None, description="the trial (id) that re-ran this one")
    oom_batch_size: int | None = Field(
        None, description="out of GPU memory: the trial was re-run with this batch size"
    )


class TrialPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TrialSummary]


class TrialDetail(TrialSummary):
    test_accuracy: float | None
    warnings: list[str] = Field(default_factory=list, description="about the configuration")
    has_model: bool = Field(False, description="GET /api/trials/{id}/model serves its weights")
    intermediate_values: dict[int, float]
    curves: dict[str, list[tuple[int, float]]]
    diagnosis: list[Finding] = Field(default_factory=list, description="trainer.diagnosis")


class Health(BaseModel):
    status: str
    database: str
    version: str


class WorkerInfo(BaseModel):
    id: int
    host: str
    pid: int
    device: str
    gpu_name: str | None
    gpu_memory_mb: int | None
    status: str = Field(description="running, stopped, or dead (no heartbeat for the grace period)")
    current_trial_id: int | None
    heartbeat_age_seconds: float
    started_at: UtcDatetime
    version: str
