"""What the command groups share: the REST and database options, and turning parsed options
into an `ApiClient` or `Settings`."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.cli.client import ApiClient

if TYPE_CHECKING:
    from service.core.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"

Command = Callable[[argparse.Namespace], int]
# What `ArgumentParser.add_subparsers()` returns (a private argparse class).
Subparsers = Any


class CommandError(Exception):
    """A command failed outside the API (a file it cannot read, a token the database
    refuses); `hpo` prints `error: <message>` and exits 1, as for an `ApiError`."""


def one_line(message: str) -> str:
    """`message` on one line: its lines joined with `; `."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def add_client_command(
    sub: Subparsers, name: str, func: Command, help: str
) -> argparse.ArgumentParser:
    """A command that talks to the service over REST: `--url` (env HPO_URL) and `--token`
    (env HPO_TOKEN), read from the environment when the parser is built."""
    c: argparse.ArgumentParser = sub.add_parser(name, help=help)
    c.add_argument(
        "--url", default=os.environ.get("HPO_URL", DEFAULT_URL), help="service URL (HPO_URL)"
    )
    c.add_argument("--token", default=os.environ.get("HPO_TOKEN"), help="API token (HPO_TOKEN)")
    c.set_defaults(func=func)
    return c


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that opens the database itself."""
    parser.add_argument("--database-url", help="SQLAlchemy URL (env HPO_DATABASE_URL)")
    parser.add_argument("--data-dir", help="where the default SQLite database lives")
    parser.add_argument("--log-level", help="debug, info, warning (env HPO_LOG_LEVEL)")


def client_of(args: argparse.Namespace) -> ApiClient:
    """The REST client a command's `--url` and `--token` name."""
    return ApiClient(args.url, getattr(args, "token", None))


def settings_of(args: argparse.Namespace) -> Settings:
    """`Settings` from the environment, overridden by the options the command was given."""
    from pydantic import ValidationError

    from service.core.settings import Settings  # pydantic-settings: only for the commands

    overrides = {
        k: v
        for k, v in {
            "database_url": getattr(args, "database_url", None),
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "workers": getattr(args, "workers", None),
            "data_dir": getattr(args, "data_dir", None),
            "device": getattr(args, "device", None),
            "torch_threads": getattr(args, "threads", None),
            "log_level": getattr(args, "log_level", None),
            "stop_deadline_seconds": getattr(args, "stop_deadline", None),
            "auth": getattr(args, "auth", None),
        }.items()
        if v is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])} (HPO_{str(err['loc'][0]).upper()} or its "
            f"option): {err['msg']}"
            for err in e.errors()
        )
        raise CommandError(f"invalid setting {problems}") from e


def configure_logging(level: str) -> None:
    """Log lines with time, level and logger at `level`; Optuna's and Alembic's chatter only
    from warnings."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("optuna").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
