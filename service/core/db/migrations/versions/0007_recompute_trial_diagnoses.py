"""trial diagnoses: forget the findings computed by the old fit rules

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

The fit verdicts now read training against validation error relative to the task's chance
level as well as the losses (issue 12 §7): a memorizing model stored as `good_fit` is
`overfit`, and a trial that is neither gets `inconclusive`. Findings are computed once and
stored, so rows written by earlier versions would keep the old verdicts forever; deleting
them makes every finished trial's findings be computed again, with the new rules, the next
time they are read (`service.analysis.diagnoses.findings_for`). Nothing else is lost: the
findings are a function of the stored curves and spec.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM hpo_trial_diagnoses")


def downgrade() -> None:
    # Findings are recomputed on read by whichever version reads them.
    op.execute("DELETE FROM hpo_trial_diagnoses")
