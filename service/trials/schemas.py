"""API response schemas of trials."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.analysis.schemas import Finding
from service.core.types import UtcDatetime


class TrialSummary(BaseModel):
    trial_id: int
    study_id: int
    number: int
    state: str
    params: dict[str, Any]
    value: float | None = Field(description="single-objective studies: the objective's value")
    values: list[float] | None = Field(
        None, description="complete trials: one value per objective (the study's `objectives`)"
    )
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
    resumed_from_epoch: int | None = Field(
        None,
        description="a re-run that resumed from the saved state of this epoch of `retry_of`",
    )
    device_seconds: float | None = Field(
        None, description="device time it used (a fused pack's wall time split evenly)"
    )


class TrialPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[TrialSummary]


class TrialDetail(TrialSummary):
    test_accuracy: float | None
    test_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="the test split's metrics: test_accuracy and test_loss, or for regression "
        "test_rmse, test_mae (the target's units), test_r2 and test_loss",
    )
    warnings: list[str] = Field(default_factory=list, description="about the configuration")
    has_model: bool = Field(False, description="GET /api/trials/{id}/model serves its weights")
    intermediate_values: dict[int, float]
    curves: dict[str, list[tuple[int, float]]]
    diagnosis: list[Finding] = Field(default_factory=list, description="trainer.diagnosis")
