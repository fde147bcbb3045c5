"""/api/trials"""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.analysis.schemas import TrialDiagnosis
from service.app.deps import SessionDep
from service.app.ownership import TrialIdDep
from service.trials import service as trial_service
from service.trials.artifacts import load_trial_model
from service.trials.schemas import TrialDetail

router = APIRouter(prefix="/api/trials", tags=["trials"])


@router.get("/{trial_id}", response_model=TrialDetail)
def get_trial(trial_id: TrialIdDep, session: SessionDep) -> TrialDetail:
    """A trial with its params, state, value and per-epoch curves."""
    return trial_service.get_trial(session, trial_id)


@router.get(
    "/{trial_id}/model",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "a torch.save file: weights + config, input shape, n_classes, "
            "family, parameter groups; read it with trainer.checkpoint.load_checkpoint and "
            "rebuild it with rebuild_model (a plug-in family needs its plug-in installed)",
        },
        404: {"description": "no such trial, or it has no saved model (the reason says why)"},
    },
)
def get_model(trial_id: TrialIdDep, session: SessionDep) -> Response:
    """The trained model of a finished trial."""
    model = load_trial_model(session, trial_id)
    return Response(
        content=model.data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{model.filename}"',
            "X-Content-SHA256": model.sha256,
            "X-Model-Family": str(model.meta.get("family", "")),
        },
    )


@router.get("/{trial_id}/diagnosis", response_model=TrialDiagnosis)
def get_diagnosis(trial_id: TrialIdDep, session: SessionDep) -> TrialDiagnosis:
    """What the trial's curves say: under-/over-fitting, divergence, gradient health, with
    evidence and remedies mapped onto the study's space."""
    return trial_service.get_diagnosis(session, trial_id)
