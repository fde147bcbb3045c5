"""What the command groups share: the REST and database options, and turning parsed options
into a `Client` or `Settings`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.cli.output import add_output_option
from service.client import Client

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


def add_rest_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """`--url` and `--token`, on `hpo` itself (`top`) and again on each REST command, so
    that they may come before or after the command's name. A command's own default is
    SUPPRESS: absent there, the value given before it (or None) stays."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--url", default=default, help=f"service URL (env HPO_URL; default {DEFAULT_URL})"
    )
    parser.add_argument("--token", default=default, help="API token (env HPO_TOKEN)")


def add_client_command(
    sub: Subparsers, name: str, func: Command, help: str, *, output: bool = True
) -> argparse.ArgumentParser:
    """A command that talks to the service over REST: `--url`, `--token` and, when it
    prints data (`output`), `-o table|json`."""
    c: argparse.ArgumentParser = sub.add_parser(name, help=help)
    add_rest_options(c)
    if output:
        add_output_option(c)
    c.set_defaults(func=func)
    return c


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that opens the database itself."""
    parser.add_argument("--database-url", help="SQLAlchemy URL (env HPO_DATABASE_URL)")
    parser.add_argument("--data-dir", help="where the default SQLite database lives")
    parser.add_argument("--log-level", help="debug, info, warning (env HPO_LOG_LEVEL)")


def client_of(args: argparse.Namespace) -> Client:
    """The REST client of `--url` (else HPO_URL, else the default) and `--token` (else
    HPO_TOKEN), read when the command runs."""
    url = getattr(args, "url", None) or os.environ.get("HPO_URL") or DEFAULT_URL
    token = getattr(args, "token", None) or os.environ.get("HPO_TOKEN") or None
    return Client(url, token)


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
