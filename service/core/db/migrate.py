"""`hpo db upgrade`: our Alembic migrations, then Optuna's schema."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from service.core.db import optuna_indexes
from service.core.db.engine import ensure_sqlite_dir, get_engine
from service.core.optuna_storage import get_storage

# Inside the package, so a wheel (not only an editable install) can migrate.
ALEMBIC_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    if not (ALEMBIC_DIR / "env.py").exists():
        raise RuntimeError(
            f"Alembic scripts not found at {ALEMBIC_DIR}; the installed package is incomplete "
            "(reinstall it)"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("version_table", "hpo_alembic_version")
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    ensure_sqlite_dir(url)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(url), "head")
    # Creates Optuna's tables if missing; upgrades them if they are older than the library.
    storage = get_storage(url)
    if storage.get_current_version() != storage.get_head_version():
        storage.upgrade()
    # On a fresh database Optuna's tables did not exist yet when our migrations ran.
    engine = get_engine(url)
    try:
        with engine.begin() as connection:
            optuna_indexes.create(connection)
    finally:
        engine.dispose()
