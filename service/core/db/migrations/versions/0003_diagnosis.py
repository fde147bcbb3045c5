"""trial diagnoses and data-size learning-curve jobs

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_trial_diagnoses",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id"),
    )
    with op.batch_alter_table("hpo_trial_diagnoses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hpo_trial_diagnoses_study_id"), ["study_id"], unique=False
        )

    op.create_table(
        "hpo_learning_curves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("source_trial_id", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("fractions", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["worker_id"], ["hpo_workers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hpo_learning_curves", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hpo_learning_curves_study_id"), ["study_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_hpo_learning_curves_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hpo_learning_curves", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hpo_learning_curves_state"))
        batch_op.drop_index(batch_op.f("ix_hpo_learning_curves_study_id"))
    op.drop_table("hpo_learning_curves")
    with op.batch_alter_table("hpo_trial_diagnoses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hpo_trial_diagnoses_study_id"))
    op.drop_table("hpo_trial_diagnoses")
