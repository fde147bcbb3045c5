"""Trial artifacts in the database: the trained model of every finished trial.

Stored as bytes in `hpo_artifacts`, so the API, and workers on other nodes that start
trials from these weights (init_from), need nothing but the database URL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import Artifact, TrialRecord
from service.core.errors import ModelNotAvailable
from service.core.states import TrialState
from service.studies.spec import StudySpec
from trainer import FitResult, TensorData, TrainConfig
from trainer.checkpoint import checkpoint_bytes

MODEL = "model"


@dataclass(frozen=True)
class StoredModel:
    trial_id: int
    data: bytes
    sha256: str
    meta: dict[str, Any]

    @property
    def filename(self) -> str:
        return f"trial-{self.trial_id}-model.pt"


def save_trial_model(
    url: str,
    trial_id: int,
    result: FitResult,
    config: TrainConfig,
    spec: StudySpec,
    data: TensorData,
) -> None:
    """Store the trained model of a finished (complete or pruned) trial."""
    input_shape = tuple(int(d) for d in data.x_train.shape[1:])
    metrics = {name: values[-1] for name, values in result.curves.items() if values}
    blob = checkpoint_bytes(
        result.model,
        config,
        family=spec.model.family,
        input_shape=input_shape,
        n_classes=data.n_classes,
        task=data.task,
        target_mean=data.target_mean,
        target_std=data.target_std,
        extra={
            "trial_id": trial_id,
            "study": spec.name,
            "dataset": spec.dataset.model_dump(mode="json"),
            "epochs": result.epochs_run,
            "metrics": metrics,
        },
    )
    meta = {
        "family": spec.model.family,
        "n_blocks": len(result.model.blocks),
        "input_shape": list(input_shape),
        "n_classes": data.n_classes,
        "task": data.task,
    }
    try:
        with session_scope(url) as session:
            session.add(
                Artifact(
                    trial_id=trial_id,
                    kind=MODEL,
                    sha256=hashlib.sha256(blob).hexdigest(),
                    size=len(blob),
                    meta=meta,
                    data=blob,
                )
            )
    except IntegrityError:  # stored already (a retried finish); the first copy stays
        pass


def model_meta(session: Session, trial_id: int) -> dict[str, Any] | None:
    """The stored model's metadata without reading its bytes; None if there is none."""
    meta = session.scalar(
        select(Artifact.meta).where(Artifact.trial_id == trial_id, Artifact.kind == MODEL)
    )
    return None if meta is None else dict(meta)


def load_trial_model(session: Session, trial_id: int) -> StoredModel:
    """The stored model of a trial; raises `ModelNotAvailable` saying why there is none."""
    row = session.execute(
        select(Artifact.data, Artifact.sha256, Artifact.meta).where(
            Artifact.trial_id == trial_id, Artifact.kind == MODEL
        )
    ).first()
    if row is None:
        raise ModelNotAvailable(missing_reason(session, trial_id))
    return StoredModel(trial_id, bytes(row.data), row.sha256, dict(row.meta))


def missing_reason(session: Session, trial_id: int) -> str:
    """Why a trial has no stored model."""
    state = session.scalar(select(TrialRecord.state).where(TrialRecord.optuna_trial_id == trial_id))
    if state is None:
        return f"trial {trial_id} not found"
    reasons: dict[str, str] = {
        TrialState.CLAIMED: "it has not started yet",
        TrialState.RUNNING: "it is still running",
        TrialState.FAIL: "it failed",
    }
    why = reasons.get(state, "none was stored for it")
    return f"trial {trial_id} has no saved model: {why}"
