"""`hpo`: serve, worker, db upgrade, and REST client commands (submit, studies, best, ...)."""

from __future__ import annotations

import argparse
import sys

from service.cli import access, db, diagnosis, processes, studies, trials, workers
from service.cli.client import ApiError
from service.cli.options import CommandError

# In the order `hpo --help` lists their commands.
GROUPS = (processes, db, studies, workers, trials, diagnosis, access)


def build_parser() -> argparse.ArgumentParser:
    """The `hpo` parser: one subcommand per command; each sets `func(args) -> exit code`."""
    p = argparse.ArgumentParser(prog="hpo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code, or 1 with `error: ...` on stderr when it failed."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ApiError, CommandError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
