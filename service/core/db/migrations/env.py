"""Alembic environment for the service's own tables.

Optuna keeps its own `alembic_version` table in the same database, so ours is
`hpo_alembic_version`.
"""

from __future__ import annotations

import os

from alembic import context

from service.core.db import outbox  # noqa: F401  (its tables in Base.metadata)
from service.core.db.engine import get_engine
from service.core.db.models import Base

VERSION_TABLE = "hpo_alembic_version"

config = context.config
url = config.get_main_option("sqlalchemy.url") or os.environ.get(
    "HPO_DATABASE_URL", "sqlite:///./hpo-data/hpo.db"
)


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with get_engine(url).connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            version_table=VERSION_TABLE,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
