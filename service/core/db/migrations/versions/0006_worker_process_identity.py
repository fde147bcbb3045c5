"""workers: the start time of each worker's process and of its supervisor

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

A supervisor (`hpo serve`, `hpo worker --gpus`) that starts after its predecessor was
killed stops the workers that predecessor left behind. It recognizes them by pid *and*
process start time, so that a pid the kernel has since given to another process is never
signalled.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("process_start", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("supervisor_pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("supervisor_start", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_workers", schema=None) as batch_op:
        batch_op.drop_column("supervisor_start")
        batch_op.drop_column("supervisor_pid")
        batch_op.drop_column("process_start")
