"""/api/studies"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.app.auth import PrincipalDep, owner_id
from service.app.deps import SessionDep, SettingsDep
from service.app.http_policies import limit_submissions
from service.app.ownership import StudyIdDep
from service.studies import service as study_service
from service.studies.schemas import (
    BestTrial,
    ParetoFront,
    StudyCreated,
    StudyDetail,
    StudySummary,
)
from service.studies.spec import StudySpec
from service.studies.submission import check_submission
from service.trials import service as trial_service
from service.trials.schemas import TrialPage

router = APIRouter(prefix="/api/studies", tags=["studies"])


@router.post(
    "",
    status_code=201,
    response_model=StudyCreated,
    dependencies=[Depends(limit_submissions)],
)
def create_study(
    spec: StudySpec, settings: SettingsDep, session: SessionDep, principal: PrincipalDep
) -> StudyCreated:
    """Submit a study. 409 if the name is taken; 422 names the bad field."""
    check_submission(session, spec, settings, principal)
    trial_service.check_init_from(session, spec)
    return study_service.create_study(session, spec, owner_id(principal))


@router.get("", response_model=list[StudySummary])
def list_studies(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[StudySummary]:
    return study_service.list_studies(session, limit, offset)


@router.get("/{study_id}", response_model=StudyDetail)
def get_study(study_id: StudyIdDep, session: SessionDep) -> StudyDetail:
    return study_service.get_study(session, study_id)


@router.get("/{study_id}/trials", response_model=TrialPage)
def list_trials(
    study_id: StudyIdDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    state: Annotated[str | None, Query(pattern="^(running|complete|pruned|fail|waiting)$")] = None,
) -> TrialPage:
    return trial_service.list_trials(session, study_id, limit, offset, state)


@router.get("/{study_id}/best", response_model=BestTrial)
def get_best(study_id: StudyIdDep, session: SessionDep) -> BestTrial:
    """The best trial; 404 before one completed, 409 for a multi-objective study (see
    `/pareto`)."""
    return study_service.require_best(session, study_id)


@router.get("/{study_id}/pareto", response_model=ParetoFront)
def get_pareto(study_id: StudyIdDep, session: SessionDep) -> ParetoFront:
    """The Pareto front: the complete trials that no other complete trial dominates (their
    values, one per objective, and params)."""
    return study_service.get_pareto(session, study_id)


@router.post("/{study_id}/stop", response_model=StudySummary)
def stop_study(study_id: StudyIdDep, session: SessionDep) -> StudySummary:
    """No new trials start; running ones finish."""
    return study_service.stop_study(session, study_id)
