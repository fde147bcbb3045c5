"""/api/trials"""

from __future__ import annotations

from fastapi import APIRouter

from service import trials as trial_service
from service.api.deps import SettingsDep
from service.schemas import TrialDetail

router = APIRouter(prefix="/api/trials", tags=["trials"])


@router.get("/{trial_id}", response_model=TrialDetail)
def get_trial(trial_id: int, settings: SettingsDep) -> TrialDetail:
    """A trial with its params, state, value and per-epoch curves."""
    return trial_service.get_trial(settings.database_url, trial_id)
