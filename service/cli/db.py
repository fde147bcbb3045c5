"""`hpo db upgrade`: create or upgrade the service's and Optuna's tables."""

from __future__ import annotations

import argparse

from service.cli.options import Subparsers, add_database_options, settings_of


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Run the migrations; print the database URL with its password hidden."""
    from service.core.db.migrate import upgrade

    settings = settings_of(args)
    upgrade(settings.database_url)
    print(f"database at {redact(settings.database_url)} is up to date")
    return 0


def redact(url: str) -> str:
    """A SQLAlchemy URL with its password shown as `***`."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def add_commands(sub: Subparsers) -> None:
    """Add `db upgrade` to the `hpo` subcommands."""
    sp = sub.add_parser("db", help="database schema")
    dbsub = sp.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="create or upgrade the service's and Optuna's tables")
    add_database_options(up)
    up.set_defaults(func=cmd_db_upgrade)
