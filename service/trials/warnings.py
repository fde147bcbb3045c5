"""Warnings about a trial's configuration (e.g. dropout placed before batch norm), stored
on its record and returned by `GET /api/trials/{id}`."""

from __future__ import annotations

from sqlalchemy import update

from service.core.db.engine import session_scope
from service.core.db.models import TrialRecord
from trainer import TrainConfig
from trainer.model import config_warnings


def record_warnings(url: str, optuna_trial_id: int, config: TrainConfig) -> list[str]:
    warnings = config_warnings(config)
    with session_scope(url) as session:
        session.execute(
            update(TrialRecord)
            .where(TrialRecord.optuna_trial_id == optuna_trial_id)
            .values(warnings=warnings)
        )
    return warnings
