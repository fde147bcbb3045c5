"""Response schemas of trial diagnoses, study reports and data-size learning curves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field


class Finding(BaseModel):
    kind: str = Field(description="underfit, overfit, good_fit, diverged, oscillating, ...")
    severity: str = Field(description="info, warning or critical")
    evidence: dict[str, float | int | str]
    remedies: list[str]


class TrialDiagnosis(BaseModel):
    trial_id: int
    findings: list[Finding]


class BoundaryHit(BaseModel):
    param: str
    edge: str = Field(description="low or high")
    advice: str


class StudyReport(BaseModel):
    study_id: int
    n_trials: int = Field(description="finished trials (complete, pruned, failed) diagnosed")
    finding_counts: dict[str, int]
    best_trial_id: int | None
    best_trial_findings: list[Finding]
    importances: dict[str, float]
    importances_note: str | None = None
    boundary_hits: list[BoundaryHit]
    advice: str


class LearningCurveRequest(BaseModel):
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 1.0],
        min_length=2,
        max_length=10,
        description="fractions of the training split, each in (0, 1]",
    )


class LearningCurve(BaseModel):
    id: int
    study_id: int
    state: str = Field(description="queued, running, complete or fail")
    source_trial_id: int = Field(description="the best trial whose configuration is trained")
    config: dict[str, Any]
    fractions: list[float]
    attempts: int
    points: list[dict[str, Any]] = Field(
        description="per size: fraction, n_train, epochs, train/val loss and accuracy"
    )
    verdict: str | None
    explanation: str | None
    evidence: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
