"""/api/studies"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError

from service.app.auth import PrincipalDep, owner_id
from service.app.deps import SettingsDep
from service.app.http_policies import limit_submissions
from service.core.errors import StudyExists
from service.studies import service as study_service
from service.studies.schemas import (
    BestTrial,
    StudyCreated,
    StudyDetail,
    StudySummary,
)
from service.studies.spec import StudySpec
from service.studies.submission import check_submission
from service.trials import service as trial_service
from service.trials.schemas import TrialPage
from service.trials.transfer import init_from_errors

router = APIRouter(prefix="/api/studies", tags=["studies"])


def _check_caps(spec: StudySpec, settings: SettingsDep) -> None:
    """The service's own limits, reported like any other validation error."""
    caps = (
        (("budget", "n_trials"), spec.budget.n_trials, settings.max_trials, "HPO_MAX_TRIALS"),
        (
            ("objective", "max_epochs"),
            spec.objective.max_epochs,
            settings.max_epochs,
            "HPO_MAX_EPOCHS",
        ),
    )
    errors = [
        {
            "type": "less_than_equal",
            "loc": ("body", *loc),
            "msg": f"{loc[-1]} must be <= {cap} on this service ({env}), got {value}",
            "input": value,
        }
        for loc, value, cap, env in caps
        if value > cap
    ]
    if errors:
        raise RequestValidationError(errors)


def _check_init_from(spec: StudySpec, settings: SettingsDep) -> None:
    """init_from names a trial: only the database knows whether it fits."""
    errors = [
        {
            "type": "value_error",
            "loc": ("body", "init_from", field),
            "msg": f"init_from.{field}: {msg}",
            "input": getattr(spec.init_from, field),
        }
        for field, msg in init_from_errors(settings.database_url, spec)
    ]
    if errors:
        raise RequestValidationError(errors)


@router.post(
    "",
    status_code=201,
    response_model=StudyCreated,
    dependencies=[Depends(limit_submissions)],
)
def create_study(spec: StudySpec, settings: SettingsDep, principal: PrincipalDep) -> StudyCreated:
    """Submit a study. 409 if the name is taken; 422 names the bad field."""
    _check_caps(spec, settings)
    check_submission(spec, settings, principal)
    _check_init_from(spec, settings)
    try:
        return study_service.create_study(settings.database_url, spec, owner_id(principal))
    except StudyExists as e:
        raise HTTPException(409, str(e)) from e


@router.get("", response_model=list[StudySummary])
def list_studies(
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[StudySummary]:
    return study_service.list_studies(settings.database_url, limit, offset)


@router.get("/{study_id}", response_model=StudyDetail)
def get_study(study_id: int, settings: SettingsDep) -> StudyDetail:
    return study_service.get_study(settings.database_url, study_id)


@router.get("/{study_id}/trials", response_model=TrialPage)
def list_trials(
    study_id: int,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    state: Annotated[str | None, Query(pattern="^(running|complete|pruned|fail|waiting)$")] = None,
) -> TrialPage:
    return trial_service.list_trials(settings.database_url, study_id, limit, offset, state)


@router.get("/{study_id}/best", response_model=BestTrial)
def get_best(study_id: int, settings: SettingsDep) -> BestTrial:
    best = study_service.get_best(settings.database_url, study_id)
    if best is None:
        raise HTTPException(404, f"study {study_id} has no completed trial yet")
    return best


@router.post("/{study_id}/stop", response_model=StudySummary)
def stop_study(study_id: int, settings: SettingsDep) -> StudySummary:
    """No new trials start; running ones finish."""
    return study_service.stop_study(settings.database_url, study_id)
