"""studies and trials: device seconds (device-hour budgets, issue 14)

Revision ID: 0008_fused
Revises: 0008_resume
Create Date: 2026-11-30

`hpo_studies.device_seconds_limit` is `budget.device_hours` in seconds (NULL: no limit), a
condition of every claim, and `hpo_studies.device_seconds` the device time its finished
trials used; `hpo_trials.device_seconds` is one trial's (a fused pack's wall time split
evenly among its members). Existing rows: no limit, 0 used, NULL per trial.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_fused"
# Issue 14 asked for "0007"; main already has 0008_resume on it, and two heads would stop
# `upgrade head`. The integrator relinks the chain at merge.
down_revision = "0008_resume"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_seconds_limit", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("device_seconds", sa.Float(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.drop_column("device_seconds")
    with op.batch_alter_table("hpo_studies", schema=None) as batch_op:
        batch_op.drop_column("device_seconds")
        batch_op.drop_column("device_seconds_limit")
