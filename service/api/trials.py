"""/api/trials"""

from __future__ import annotations

from fastapi import APIRouter

from service import trials as trial_service
from service.api.deps import SettingsDep
from service.diagnosis_schemas import TrialDiagnosis
from service.schemas import TrialDetail

router = APIRouter(prefix="/api/trials", tags=["trials"])


@router.get("/{trial_id}", response_model=TrialDetail)
def get_trial(trial_id: int, settings: SettingsDep) -> TrialDetail:
    """A trial with its params, state, value and per-epoch curves."""
    return trial_service.get_trial(settings.database_url, trial_id)


@router.get("/{trial_id}/diagnosis", response_model=TrialDiagnosis)
def get_diagnosis(trial_id: int, settings: SettingsDep) -> TrialDiagnosis:
    """What the trial's curves say: under-/over-fitting, divergence, gradient health, with
    evidence and remedies mapped onto the study's space."""
    return trial_service.get_diagnosis(settings.database_url, trial_id)
