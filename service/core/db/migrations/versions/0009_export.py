"""outbox: webhook deliveries and MLflow exports (issue 16 §7, §8)

Revision ID: 0009_export
Revises: 0008_resume
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_export"
down_revision = "0008_resume"
branch_labels = None
depends_on = None


def _delivery_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "hpo_webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        *_delivery_columns(),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hpo_webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "uq_hpo_webhook_deliveries_event", ["study_id", "event", "trial_number"], unique=True
        )
        batch_op.create_index(
            "ix_hpo_webhook_deliveries_due", ["state", "next_attempt_at"], unique=False
        )
    op.create_table(
        "hpo_mlflow_exports",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        *_delivery_columns(),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id"),
    )
    with op.batch_alter_table("hpo_mlflow_exports", schema=None) as batch_op:
        batch_op.create_index("ix_hpo_mlflow_exports_due", ["state", "next_attempt_at"])


def downgrade() -> None:
    with op.batch_alter_table("hpo_mlflow_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_hpo_mlflow_exports_due")
    op.drop_table("hpo_mlflow_exports")
    with op.batch_alter_table("hpo_webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_hpo_webhook_deliveries_due")
        batch_op.drop_index("uq_hpo_webhook_deliveries_event")
    op.drop_table("hpo_webhook_deliveries")
