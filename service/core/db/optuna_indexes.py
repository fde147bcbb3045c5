"""Indexes of ours on Optuna's `trials` table, for the worker's incremental reads.

Optuna indexes `trials.study_id` alone. The worker's refresh (`studies.search.history`) reads
"the trials of study S above id W" and, once per process, the study's trials by state; on
PostgreSQL an index on `study_id` alone makes the first scan every trial of the study (SQLite
appends the rowid to every index, PostgreSQL does not). Optuna's tables are created after our
migrations on a fresh database (`migrate.upgrade`), so the indexes are ensured twice: by the
migration `0008_scale_worker` on a database that has Optuna's tables, and by `upgrade` after
Optuna's schema step. Both are `CREATE INDEX IF NOT EXISTS` (SQLite and PostgreSQL).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

INDEXES: dict[str, tuple[str, ...]] = {
    "ix_hpo_trials_study_trial": ("study_id", "trial_id"),
    "ix_hpo_trials_study_state_trial": ("study_id", "state", "trial_id"),
}


def ensure_optuna_indexes(conn: Connection) -> None:
    """Create our indexes on Optuna's `trials` if that table exists and they do not."""
    if not sa.inspect(conn).has_table("trials"):
        return
    for name, columns in INDEXES.items():
        conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {name} ON trials ({', '.join(columns)})"))


def drop_optuna_indexes(conn: Connection) -> None:
    """Drop them again (the migration's downgrade)."""
    for name in INDEXES:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
