"""/api/studies/{id}/report and /api/studies/{id}/learning-curve"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException

from service.analysis import learning_curves
from service.analysis.report import study_report
from service.analysis.schemas import LearningCurve, LearningCurveRequest, StudyReport
from service.app.deps import SettingsDep
from service.core.errors import JobActive, NoCompletedTrial, NoLearningCurve

router = APIRouter(prefix="/api/studies", tags=["diagnosis"])


@router.get("/{study_id}/report", response_model=StudyReport)
def get_report(study_id: int, settings: SettingsDep) -> StudyReport:
    """Finding counts over the trials, the best trial's findings, parameter importances,
    search-space boundary hits and a paragraph of advice."""
    return study_report(settings.database_url, study_id)


@router.post("/{study_id}/learning-curve", status_code=202, response_model=LearningCurve)
def start_learning_curve(
    study_id: int,
    settings: SettingsDep,
    request: Annotated[LearningCurveRequest | None, Body()] = None,
) -> LearningCurve:
    """Queue training of the best configuration on growing fractions of the training split
    (run by the workers); 409 while one is queued or running or before a trial completed."""
    fractions = (request or LearningCurveRequest()).fractions
    try:
        return learning_curves.create_job(settings.database_url, study_id, fractions)
    except (NoCompletedTrial, JobActive) as e:
        raise HTTPException(409, str(e)) from e


@router.get("/{study_id}/learning-curve", response_model=LearningCurve)
def get_learning_curve(study_id: int, settings: SettingsDep) -> LearningCurve:
    """The study's latest learning-curve job: state, points per size, verdict."""
    try:
        return learning_curves.latest_job(settings.database_url, study_id)
    except NoLearningCurve as e:
        raise HTTPException(404, str(e)) from e
