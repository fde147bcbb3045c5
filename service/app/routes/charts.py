"""Chart data for the dashboard (and anyone else): compact histories, downsampled curves,
parameter importances."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.analysis import charts
from service.analysis.chart_schemas import Importances, StudyCurves, StudyHistory, TrialCurves
from service.app.deps import SessionDep
from service.app.ownership import StudyIdDep, TrialIdDep

router = APIRouter(prefix="/api", tags=["charts"])

MaxPoints = Annotated[int, Query(ge=3, le=100_000, description="downsample each curve to this")]


@router.get("/studies/{study_id}/history", response_model=StudyHistory)
def study_history(study_id: StudyIdDep, session: SessionDep) -> Response:
    """Every trial's number, state, value, params, duration and pruning/failure reason,
    one list per column."""
    # Serialized once here; through response_model FastAPI would validate it all again.
    body = charts.history(session, study_id).model_dump_json()
    return Response(body, media_type="application/json")


@router.get("/studies/{study_id}/curves", response_model=StudyCurves)
def study_curves(
    study_id: StudyIdDep,
    session: SessionDep,
    metric: Annotated[str | None, Query(max_length=64, description="default: objective")] = None,
    top: Annotated[int, Query(ge=1, le=1000)] = 50,
    max_points: MaxPoints = 200,
) -> StudyCurves:
    """One metric's curve for every trial of a study of at most `top` trials; of a larger
    study, for the running trials and the `top` best complete ones."""
    return charts.study_curves(session, study_id, metric, top, max_points)


@router.get("/studies/{study_id}/importances", response_model=Importances)
def study_importances(study_id: StudyIdDep, session: SessionDep) -> Importances:
    """Importances of the searched params: Optuna's fANOVA; past 100 complete trials,
    PED-ANOVA over an even sample of about 500 (empty until two trials completed)."""
    return charts.importances(session, study_id)


@router.get("/trials/{trial_id}/curves", response_model=TrialCurves)
def trial_curves(
    trial_id: TrialIdDep,
    session: SessionDep,
    metric: Annotated[list[str] | None, Query(description="repeat for several")] = None,
    max_points: MaxPoints = 1000,
) -> TrialCurves:
    """A trial's curves, each downsampled (LTTB) to at most `max_points` points."""
    return charts.trial_curves(session, trial_id, metric, max_points)
