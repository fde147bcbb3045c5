"""workers: GPU name and memory; trials: retry links and OOM batch size; studies: running
count and max_parallel_trials; enqueued configurations: retry links

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_name", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("gpu_memory_mb", sa.Integer(), nullable=True))
    with op.batch_alter_table("hpo_studies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("n_running", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("max_parallel_trials", sa.Integer(), nullable=True))
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("retry_number", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("oom_batch_size", sa.Integer(), nullable=True))
    with op.batch_alter_table("hpo_enqueued", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("retry_number", sa.Integer(), nullable=False, server_default="0")
        )
    # Trials claimed before this migration and still unfinished hold a running place.
    op.execute(
        "UPDATE hpo_studies SET n_running = (SELECT count(*) FROM hpo_trials "
        "WHERE hpo_trials.study_id = hpo_studies.id AND hpo_trials.finished_at IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("hpo_enqueued", schema=None) as batch_op:
        batch_op.drop_column("retry_number")
        batch_op.drop_column("retry_of")
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.drop_column("oom_batch_size")
        batch_op.drop_column("retry_number")
        batch_op.drop_column("retry_of")
    with op.batch_alter_table("hpo_studies", schema=None) as batch_op:
        batch_op.drop_column("max_parallel_trials")
        batch_op.drop_column("n_running")
    with op.batch_alter_table("hpo_workers", schema=None) as batch_op:
        batch_op.drop_column("gpu_memory_mb")
        batch_op.drop_column("gpu_name")
