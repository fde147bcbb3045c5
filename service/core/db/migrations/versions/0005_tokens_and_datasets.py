"""API tokens, uploaded datasets, owners of studies

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_index("ix_hpo_api_tokens_name", "hpo_api_tokens", ["name"])
    op.create_table(
        "hpo_dataset_blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "hpo_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source_format", sa.String(length=16), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("n_classes", sa.Integer(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("owner_token_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["sha256"], ["hpo_dataset_blobs.sha256"]),
        sa.ForeignKeyConstraint(["owner_token_id"], ["hpo_api_tokens.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_hpo_datasets_sha256", "hpo_datasets", ["sha256"])
    with op.batch_alter_table("hpo_studies") as batch_op:
        batch_op.add_column(sa.Column("owner_token_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_hpo_studies_owner_token_id", "hpo_api_tokens", ["owner_token_id"], ["id"]
        )
        batch_op.create_index("ix_hpo_studies_owner_token_id", ["owner_token_id"])


def downgrade() -> None:
    with op.batch_alter_table("hpo_studies") as batch_op:
        batch_op.drop_index("ix_hpo_studies_owner_token_id")
        batch_op.drop_constraint("fk_hpo_studies_owner_token_id", type_="foreignkey")
        batch_op.drop_column("owner_token_id")
    op.drop_index("ix_hpo_datasets_sha256", table_name="hpo_datasets")
    op.drop_table("hpo_datasets")
    op.drop_table("hpo_dataset_blobs")
    op.drop_index("ix_hpo_api_tokens_name", table_name="hpo_api_tokens")
    op.drop_table("hpo_api_tokens")
