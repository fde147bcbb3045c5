"""Indexes the service adds to Optuna's `trials` table for its own reads.

Optuna indexes `trials.study_id` alone. Without these:
- the API's trials page in number order, its state filter and its counts by state walk (and
  on SQLite sort) every trial of the study (`INDEXES`, migration `0011_scale_api`);
- the worker's incremental refresh (`studies.search.history`: "the trials of study S above
  id W", and once per process the study's trials by state) scans every trial of the study on
  PostgreSQL, which, unlike SQLite, does not append the row id to every index
  (`WORKER_INDEXES`, migration `0012_scale_worker`).

On a fresh database our migrations run before Optuna creates its tables, so `hpo db
upgrade` creates them again after Optuna's schema step (`create`). Every statement is
`IF NOT EXISTS`/`IF EXISTS` (SQLite and PostgreSQL), so both paths are idempotent; Optuna never
drops indexes it does not know.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

# name -> columns of Optuna's `trials`
INDEXES: dict[str, tuple[str, ...]] = {
    # A trials page in number order, the last trial of a study.
    "ix_hpo_optuna_trials_study_number": ("study_id", "number"),
    # Counts by state, pages of one state, the complete trials of a study.
    "ix_hpo_optuna_trials_study_state_number": ("study_id", "state", "number"),
}
WORKER_INDEXES: dict[str, tuple[str, ...]] = {
    "ix_hpo_trials_study_trial": ("study_id", "trial_id"),
    "ix_hpo_trials_study_state_trial": ("study_id", "state", "trial_id"),
}


def _create(connection: Connection, indexes: dict[str, tuple[str, ...]]) -> None:
    if not inspect(connection).has_table("trials"):
        return
    for name, columns in indexes.items():
        cols = ", ".join(columns)
        connection.execute(text(f"CREATE INDEX IF NOT EXISTS {name} ON trials ({cols})"))


def _drop(connection: Connection, indexes: dict[str, tuple[str, ...]]) -> None:
    for name in indexes:
        connection.execute(text(f"DROP INDEX IF EXISTS {name}"))


def create(connection: Connection) -> None:
    """Create every index of ours whose table exists and that is missing; commits nothing."""
    _create(connection, {**INDEXES, **WORKER_INDEXES})


def create_api_indexes(connection: Connection) -> None:
    """The API's (migration 0011)."""
    _create(connection, INDEXES)


def drop(connection: Connection) -> None:
    """Drop the API's indexes (migration 0011's downgrade)."""
    _drop(connection, INDEXES)


def ensure_optuna_indexes(connection: Connection) -> None:
    """The worker's (migration 0012)."""
    _create(connection, WORKER_INDEXES)


def drop_optuna_indexes(connection: Connection) -> None:
    """Drop the worker's indexes (migration 0012's downgrade)."""
    _drop(connection, WORKER_INDEXES)
