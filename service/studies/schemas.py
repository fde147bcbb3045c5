"""API response schemas of studies, trials, workers and health."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.core.types import UtcDatetime

WARNINGS_HELP = (
    "what the accepted spec does that its author may not expect, one sentence each "
    "(e.g. a `when` value its parameter's space never takes)"
)


class StudyCreated(BaseModel):
    id: int
    name: str
    status: str
    warnings: list[str] = Field(default_factory=list, description=WARNINGS_HELP)


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
    test_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="the test split's metrics: test_accuracy and test_loss, or for regression "
        "test_rmse, test_mae (the target's units), test_r2 and test_loss",
    )


class ObjectiveOut(BaseModel):
    metric: str
    direction: str


class ParetoTrial(BaseModel):
    trial_id: int
    number: int
    values: list[float] = Field(description="one per objective, in `objectives` order")
    params: dict[str, Any] = Field(description="the searched parameters' values")


class ParetoFront(BaseModel):
    objectives: list[ObjectiveOut]
    trials: list[ParetoTrial] = Field(
        description="the complete trials no other complete trial dominates, best first by "
        "the first objective"
    )


class StudySummary(BaseModel):
    id: int
    name: str
    status: str
    n_trials: int
    counts: TrialCounts
    best_value: float | None = Field(description="single-objective studies only")
    direction: str = Field(description="the objective's; a multi-objective study's first one")
    metric: str = Field("val_accuracy", description="the objective's metric")
    task: str = Field(
        "classification", description="the dataset's task: classification or regression"
    )
    objectives: list[ObjectiveOut] = Field(
        default_factory=list, description="what the study optimizes: one, or 2-3 (a Pareto front)"
    )
    error: str | None
    created_at: UtcDatetime
    finished_at: UtcDatetime | None


class StudyDetail(StudySummary):
    spec: dict[str, Any]
    best: BestTrial | None
    warnings: list[str] = Field(default_factory=list, description=WARNINGS_HELP)
    device_seconds: float = Field(
        0.0, description="device time its finished trials used (a fused pack's split evenly)"
    )
    device_seconds_limit: float | None = Field(
        None, description="budget.device_hours in seconds: no trial starts past it"
    )


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
