"""trials: the epoch a re-run resumed from

Revision ID: 0008_resume
Revises: 0007
Create Date: 2026-11-30

A re-run of a trial whose worker died or was stopped continues from the last training state
that trial saved (kind `checkpoint` in `hpo_artifacts`, issue 16 §6). The re-run's record
says from which epoch: it trained only the epochs after it, and its curves' earlier points
were copied from the trial it re-runs. NULL: it trained from epoch 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_resume"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resumed_from_epoch", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.drop_column("resumed_from_epoch")
