"""Responses of the chart endpoints (compact: one list per column, not one object per row)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.studies.schemas import ObjectiveOut


class StudyHistory(BaseModel):
    """Every trial of a study in trial-number order; entry i of each list is one trial. A
    study of more than a few thousand trials gets a downsampled history (`downsampled`): an
    even sample of its trials plus every trial that improved the best value, so the
    best-so-far curve is exact (service/studies/samples.py)."""

    study_id: int
    direction: str = Field(description="the (first) objective's")
    metric: str = Field(description="the (first) objective's")
    objectives: list[ObjectiveOut] = Field(default_factory=list)
    count: int = Field(description="trials in these lists")
    total: int = Field(0, description="trials in the study")
    downsampled: bool = Field(False, description="the lists hold a sample of the trials")
    trial_id: list[int]
    number: list[int]
    state: list[str]
    value: list[float | None] = Field(description="(first) objective value of complete trials")
    values: list[list[float] | None] = Field(
        default_factory=list,
        description="complete trials with finite values: one value per objective",
    )
    duration_seconds: list[float | None]
    last_step: list[int | None] = Field(description="pruned trials: the last reported epoch")
    reason: list[str | None] = Field(description="why a trial was pruned or failed")
    params: dict[str, list[Any]] = Field(description="{param: [value or null per trial]}")


class TrialCurve(BaseModel):
    trial_id: int
    number: int
    state: str
    value: float | None
    n_points: int = Field(description="points stored before downsampling")
    points: list[tuple[int, float]]


class StudyCurves(BaseModel):
    study_id: int
    metric: str
    total: int = Field(description="trials in the study; `trials` holds the selected ones")
    trials: list[TrialCurve]


class TrialCurves(BaseModel):
    trial_id: int
    n_points: dict[str, int] = Field(description="points stored per metric, before downsampling")
    curves: dict[str, list[tuple[int, float]]]


class Importances(BaseModel):
    study_id: int
    n_complete: int
    n_used: int = Field(description="complete trials the importances were computed over")
    evaluator: str
    importances: dict[str, float] = Field(description="sums to 1 over the searched params")
