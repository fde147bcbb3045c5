"""Indexes the service adds to Optuna's tables for its own reads.

Optuna indexes `trials.study_id` alone; the API pages a study's trials in number order,
filters them by state and counts them by state, which without these walk (and on SQLite sort)
every trial of the study. They are created by migration 0008 when Optuna's tables exist
already, and by `hpo db upgrade` after it created Optuna's tables on a fresh database
(`IF NOT EXISTS` makes both idempotent). Optuna never drops indexes it does not know.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

# name -> (table, columns)
INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    # A trials page in number order, the last trial of a study.
    "ix_hpo_optuna_trials_study_number": ("trials", ("study_id", "number")),
    # Counts by state, pages of one state, the complete trials of a study.
    "ix_hpo_optuna_trials_study_state_number": ("trials", ("study_id", "state", "number")),
}


def create(connection: Connection) -> None:
    """Create the indexes whose table exists and that are missing; commits nothing."""
    tables = set(inspect(connection).get_table_names())
    for name, (table, columns) in INDEXES.items():
        if table in tables:
            cols = ", ".join(columns)
            connection.execute(text(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({cols})"))


def drop(connection: Connection) -> None:
    """Drop them again (our migration's downgrade)."""
    for name in INDEXES:
        connection.execute(text(f"DROP INDEX IF EXISTS {name}"))
