"""`hpo`: serve, worker, db upgrade, and REST client commands (submit, studies, best, ...).

The REST commands take `--url` (env HPO_URL) and `--token` (env HPO_TOKEN) before or after
the command's name, and `-o table|json` when they print data (json: the API's answer).

Exit codes: 0 done; 1 the command failed (one line `error: ...` on stderr: the service or
the database unreachable or refusing, an unknown study, a bad file, ...; `watch` also when
the study failed); 2 a usage error; 130 interrupted by Ctrl-C (`hpo serve` after stopping
its workers); 141 its output was closed early (`hpo trials x | head`).
"""

from __future__ import annotations

# Only the standard library here: the command groups (httpx, YAML, ...) are imported inside
# main()'s guard, so that a Ctrl-C while they load, the first second of any `hpo`, also
# exits 130 quietly (a KeyboardInterrupt raised by an import up here would print a traceback).
import argparse
import os
import signal
import sys

AUTH_HINT = "give a token with --token or HPO_TOKEN"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a command Ctrl-C stopped
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141, as for a command a closed pipe stopped


def build_parser() -> argparse.ArgumentParser:
    """The `hpo` parser: one subcommand per command; each sets `func(args) -> exit code`."""
    from service import __version__
    from service.cli import access, db, diagnosis, processes, studies, trials, workers
    from service.cli.options import add_rest_options

    p = argparse.ArgumentParser(
        prog="hpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"hpo {__version__}")
    add_rest_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)
    # In the order `hpo --help` lists their commands.
    for group in (processes, db, studies, workers, trials, diagnosis, access):
        group.add_commands(sub)
    return p


def run(argv: list[str] | None = None) -> int:
    """Parse and run one command; its exit code, or 1 with `error: ...` on stderr."""
    from service.cli.options import CommandError, one_line
    from service.client import ApiError, AuthError, SpecFileError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ApiError, CommandError, SpecFileError) as e:
        message = one_line(str(e))
        if isinstance(e, AuthError) and e.status == 401:
            message += f" ({AUTH_HINT})"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command (see `run`); Ctrl-C exits 130 with `interrupted` on stderr, and a
    closed standard output (a pipe into `head`) exits 141 quietly: no traceback either way."""
    try:
        try:
            return run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that it cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
