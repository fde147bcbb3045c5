"""studies and trials: device seconds (device-hour budgets, issue 14)

Revision ID: 0013_fused
Revises: 0012_scale_worker
Create Date: 2026-11-30

`hpo_studies.device_seconds_limit` is `budget.device_hours` in seconds (NULL: no limit), a
condition of every claim, and `hpo_studies.device_seconds` the device time its finished
trials used; `hpo_trials.device_seconds` is one trial's (a fused pack's wall time split
evenly among its members). Existing rows: no limit, 0 used, NULL per trial.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_fused"
# Written as 0008_fused on "0007"; main has since gained 0008_resume .. 0010_regression, and
# two heads would stop `upgrade head`, so it follows main's head.
down_revision = "0012_scale_worker"
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
