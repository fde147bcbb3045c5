"""scale: indexed reads of large studies, finding kinds for aggregate counts, device gauges

Revision ID: 0011_scale_api
Revises: 0010_regression
Create Date: 2026-11-30

- Indexes on Optuna's `trials` for pages in number order, state filters and counts
  (`service.core.db.optuna_indexes`; on a fresh database `hpo db upgrade` creates them after
  Optuna's tables).
- `hpo_trials.retry_of` indexed: a trials page looks up which trials re-ran its rows.
- `hpo_trial_finding_kinds`: one row per (trial, finding kind) with its count, written with
  the trial's findings, so that a study report counts kinds with one GROUP BY instead of
  reading every trial's findings; filled here from the stored findings.
- `hpo_workers.gpu_memory_used_mb`, `gpu_utilization`: what the worker's heartbeat last saw
  of its device (NULL on CPU or without NVML).
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from alembic import op

from service.core.db import optuna_indexes

revision = "0011_scale_api"
down_revision = "0010_regression"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_trial_finding_kinds",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["trial_id"], ["hpo_trial_diagnoses.trial_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "kind"),
    )
    op.create_index(
        "ix_hpo_trial_finding_kinds_study_kind",
        "hpo_trial_finding_kinds",
        ["study_id", "kind"],
    )
    op.create_index("ix_hpo_trials_retry_of", "hpo_trials", ["retry_of"])
    with op.batch_alter_table("hpo_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_memory_used_mb", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("gpu_utilization", sa.Float(), nullable=True))
    connection = op.get_bind()
    optuna_indexes.create_api_indexes(connection)
    _fill_kinds(connection)


def _fill_kinds(connection: sa.engine.Connection) -> None:
    diagnoses = sa.table(
        "hpo_trial_diagnoses",
        sa.column("trial_id", sa.Integer),
        sa.column("study_id", sa.Integer),
        sa.column("findings", sa.JSON),
    )
    kinds = sa.table(
        "hpo_trial_finding_kinds",
        sa.column("trial_id", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("study_id", sa.Integer),
        sa.column("n", sa.Integer),
    )
    rows = []
    for trial_id, study_id, findings in connection.execute(
        sa.select(diagnoses.c.trial_id, diagnoses.c.study_id, diagnoses.c.findings)
    ):
        counted = Counter(str(f["kind"]) for f in findings or [])
        rows += [
            {"trial_id": trial_id, "kind": k, "study_id": study_id, "n": n}
            for k, n in counted.items()
        ]
        if len(rows) >= 10_000:
            connection.execute(sa.insert(kinds), rows)
            rows = []
    if rows:
        connection.execute(sa.insert(kinds), rows)


def downgrade() -> None:
    optuna_indexes.drop(op.get_bind())
    with op.batch_alter_table("hpo_workers", schema=None) as batch_op:
        batch_op.drop_column("gpu_utilization")
        batch_op.drop_column("gpu_memory_used_mb")
    op.drop_index("ix_hpo_trials_retry_of", table_name="hpo_trials")
    op.drop_index("ix_hpo_trial_finding_kinds_study_kind", table_name="hpo_trial_finding_kinds")
    op.drop_table("hpo_trial_finding_kinds")
