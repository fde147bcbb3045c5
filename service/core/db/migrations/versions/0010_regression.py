"""regression: a dataset's task, and a trial's test metrics of any task

Revision ID: 0010_regression
Revises: 0009_export
Create Date: 2026-11-30

`hpo_datasets.task` (classification | regression; every earlier upload is classification)
and `hpo_trials.test_metrics`, the test split's metrics by name (`test_accuracy`, or
`test_rmse`, `test_mae`, `test_r2` for regression, and `test_loss`); `test_accuracy` stays
as it was, so readers of earlier versions keep working.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_regression"
down_revision = "0009_export"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_datasets") as batch:
        batch.add_column(
            sa.Column("task", sa.String(16), nullable=False, server_default="classification")
        )
    with op.batch_alter_table("hpo_trials") as batch:
        batch.add_column(sa.Column("test_metrics", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials") as batch:
        batch.drop_column("test_metrics")
    with op.batch_alter_table("hpo_datasets") as batch:
        batch.drop_column("task")
