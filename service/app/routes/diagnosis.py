"""/api/studies/{id}/report and /api/studies/{id}/learning-curve"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from service.analysis import learning_curves
from service.analysis.report import study_report
from service.analysis.schemas import LearningCurve, LearningCurveRequest, StudyReport
from service.app.deps import SessionDep
from service.app.ownership import StudyIdDep

router = APIRouter(prefix="/api/studies", tags=["diagnosis"])


@router.get("/{study_id}/report", response_model=StudyReport)
def get_report(study_id: StudyIdDep, session: SessionDep) -> StudyReport:
    """Finding counts over the trials, the best trial's findings, parameter importances,
    search-space boundary hits and a paragraph of advice."""
    return study_report(session, study_id)


@router.post("/{study_id}/learning-curve", status_code=202, response_model=LearningCurve)
def start_learning_curve(
    study_id: StudyIdDep,
    session: SessionDep,
    request: Annotated[LearningCurveRequest | None, Body()] = None,
) -> LearningCurve:
    """Queue training of the best configuration on growing fractions of the training split
    (run by the workers); 409 while one is queued or running or before a trial completed."""
    fractions = (request or LearningCurveRequest()).fractions
    return learning_curves.create_job(session, study_id, fractions)


@router.get("/{study_id}/learning-curve", response_model=LearningCurve)
def get_learning_curve(study_id: StudyIdDep, session: SessionDep) -> LearningCurve:
    """The study's latest learning-curve job: state, points per size, verdict."""
    return learning_curves.latest_job(session, study_id)
