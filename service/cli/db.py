"""`hpo db upgrade`: create or upgrade the service's and Optuna's tables; and what every
command that opens the database itself shares: one-line errors for a database that cannot
be reached, and for one whose schema is missing or not the one this version needs."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.cli.options import CommandError, Subparsers, add_database_options, settings_of

UPGRADE_HINT = "run `hpo db upgrade` with the same --database-url / --data-dir first"


def redact(url: str) -> str:
    """A SQLAlchemy URL with its password shown as `***`."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn the database's expected failures inside the block (unreachable, refused, an
    unparsable URL, a missing driver) into a one-line `CommandError`."""
    from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError

    try:
        yield
    except ArgumentError as e:  # never echo an unparsable URL: it may hold a password
        raise CommandError(f"invalid database URL (--database-url or HPO_DATABASE_URL): {e}") from e
    except NoSuchModuleError as e:
        raise CommandError(f"no database driver for {redact(url)}: {e}") from e
    except ModuleNotFoundError as e:  # the URL names a driver that is not installed
        if (e.name or "").startswith(("service", "trainer")):
            raise
        raise CommandError(f"no database driver for {redact(url)}: {e}") from e
    except (OperationalError, InterfaceError) as e:  # the driver's reason, first line
        lines = [ln.strip() for ln in str(e.orig or e).splitlines() if ln.strip()]
        reason = lines[0] if lines else e.__class__.__name__
        raise CommandError(f"cannot use the database at {redact(url)}: {reason}") from e


def sqlite_file_missing(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist (connecting would create it)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    path = Path(u.database)
    return None if path.exists() else path


def current_revision(url: str) -> str | None:
    """The revision our tables are at (`hpo_alembic_version`); None for a database nobody
    has migrated (or a SQLite file that does not exist, which this does not create)."""
    from alembic.runtime.migration import MigrationContext

    from service.core.db.engine import get_engine

    if sqlite_file_missing(url):
        return None
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are noise here
    with get_engine(url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "hpo_alembic_version"})
        return context.get_current_revision()


def known_revisions() -> tuple[str, list[str]]:
    """(head, every revision) of this version's migrations."""
    from alembic.script import ScriptDirectory

    import service

    # Where core/db/migrate.py finds them, without importing it (it imports Optuna).
    scripts = Path(service.__file__).resolve().parent / "core" / "db" / "migrations"
    if not (scripts / "env.py").exists():
        raise CommandError(
            f"Alembic scripts not found at {scripts}; the installed package is incomplete "
            "(reinstall it)"
        )
    script = ScriptDirectory(str(scripts))
    head = script.get_current_head()
    assert head is not None
    return head, [r.revision for r in script.walk_revisions()]


def require_current_schema(url: str) -> None:
    """Raise a one-line `CommandError` unless the database exists and our tables are at
    this version's head revision (saying whether to run `hpo db upgrade` or to upgrade
    hpo); SQLAlchemy's errors when it cannot be reached (see `database_errors`)."""
    missing = sqlite_file_missing(url)
    if missing:
        raise CommandError(f"no database at {missing}: {UPGRADE_HINT}")
    current = current_revision(url)
    head, known = known_revisions()
    if current == head:
        return
    where = redact(url)
    if current is None:
        raise CommandError(f"the database at {where} has no hpo tables yet: {UPGRADE_HINT}")
    if current in known:
        raise CommandError(
            f"the database at {where} is at schema revision {current}, this version of hpo "
            f"needs {head}: {UPGRADE_HINT}"
        )
    raise CommandError(
        f"the database at {where} is at schema revision {current}, which this version of "
        "hpo does not know (a newer one migrated it): upgrade hpo"
    )


def check_database(url: str) -> None:
    """Raise a one-line `CommandError` unless the database at `url` can be reached and its
    schema is this version's (see `require_current_schema`)."""
    with database_errors(url):
        require_current_schema(url)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Run the migrations; say what they did (created, migrated from, or up to date), with
    the database URL's password hidden."""
    from service.core.db.migrate import upgrade

    url = settings_of(args).database_url
    with database_errors(url):
        before = current_revision(url)
        upgrade(url)
        head, _ = known_revisions()
    where = redact(url)
    if before is None:
        print(f"created the tables of the database at {where} (schema revision {head})")
    elif before != head:
        print(f"migrated the database at {where} from schema revision {before} to {head}")
    else:
        print(f"the database at {where} is up to date (schema revision {head})")
    return 0


def add_commands(sub: Subparsers) -> None:
    """Add `db upgrade` to the `hpo` subcommands."""
    sp = sub.add_parser("db", help="database schema")
    dbsub = sp.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="create or upgrade the service's and Optuna's tables")
    add_database_options(up)
    up.set_defaults(func=cmd_db_upgrade)
