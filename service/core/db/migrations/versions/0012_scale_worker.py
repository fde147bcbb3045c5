"""Optuna's trials: indexes for the worker's incremental reads (issue 13)

Revision ID: 0012_scale_worker
Revises: 0011_scale_api
Create Date: 2026-11-30

`trials (study_id, trial_id)` serves "the trials of a study above the highest id seen", the
worker's refresh per epoch and per ask; `trials (study_id, state, trial_id)` its first read of
a study. See `service/core/db/optuna_indexes.py` (a fresh database gets them after Optuna
creates its tables).
"""

from __future__ import annotations

from alembic import op

from service.core.db.optuna_indexes import drop_optuna_indexes, ensure_optuna_indexes

revision = "0012_scale_worker"
down_revision = "0011_scale_api"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ensure_optuna_indexes(op.get_bind())


def downgrade() -> None:
    drop_optuna_indexes(op.get_bind())
