"""`hpo serve`, `hpo worker`, `hpo worker-health`: the service's processes on this machine.

They read the database directly (no REST). Their heavy imports (uvicorn, torch) happen
inside the commands, so that `hpo --help` and the REST commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from service.cli.db import check_database, database_errors, require_current_schema
from service.cli.logs import configure_logging
from service.cli.options import (
    CommandError,
    Subparsers,
    add_database_options,
    settings_of,
)

if TYPE_CHECKING:
    from service.core.settings import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Migrate (unless `--no-migrate`: then check the schema), then serve the API beside
    the local workers until SIGTERM (exit 0) or Ctrl-C (exit 130)."""
    settings = settings_of(args)
    configure_logging(settings.log_level, settings.log_format)
    url = settings.database_url
    with database_errors(url):
        if args.no_migrate:
            require_current_schema(url)
        else:
            from service.core.db.migrate import upgrade

            upgrade(url)
        from service.cli.serve import serve  # uvicorn, the app, torch: once the rest is fine

        return serve(settings)


def cmd_worker(args: argparse.Namespace) -> int:
    """One worker process in this process, or a pool of them, one per GPU slot. Exits 2 on
    a bad `--gpus`, 1 (one line) on a database that is not migrated."""
    from service.worker.lifeline import hold_on

    hold_on()  # first: a worker of a supervisor that dies now must stop too
    settings = settings_of(args)
    configure_logging(settings.log_level, settings.log_format)
    check_schema_unless_unreachable(settings.database_url)
    with database_errors(settings.database_url):
        return run_workers(args, settings)


def check_schema_unless_unreachable(url: str) -> None:
    """`CommandError` when the database answers but is not migrated to this version. One
    that cannot be reached yet is not an error here: a worker waits for its database."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        with database_errors(url):
            require_current_schema(url)
    except CommandError as e:
        if not isinstance(e.__cause__, OperationalError | InterfaceError):
            raise
        logging.getLogger("hpo.worker").warning("%s; waiting for it", e)


def run_workers(args: argparse.Namespace, settings: Settings) -> int:
    """The worker (or the pool) `hpo worker`'s options describe, until it stops."""
    from service.worker.pool import node_slots, run_pool

    studies = [x.strip() for x in args.studies.split(",") if x.strip()] if args.studies else None
    try:
        slots = node_slots(args.gpus, args.trials_per_gpu, settings.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(slots) > 1:
        extra = ["--max-trials", str(args.max_trials)] if args.max_trials else []
        extra += ["--until-idle"] if args.until_idle else []
        return run_pool(settings, slots, studies=studies, worker_args=extra)
    from service.worker.process import WorkerProcess

    slot = slots[0]
    device = f"cuda:{slot.visible_devices}" if slot.visible_devices else slot.device
    settings = settings.model_copy(update={"device": device})
    code = WorkerProcess(settings, studies).run(
        max_trials=args.max_trials, until_idle=args.until_idle
    )
    # Everything is recorded: leave without the interpreter's final garbage collection,
    # which takes seconds in a process holding torch (far more on a loaded node) and
    # would eat into the stop deadline.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_worker_health(args: argparse.Namespace) -> int:
    """Exit 0 when a worker on this host has a fresh heartbeat, else 1."""
    settings = settings_of(args)
    check_database(settings.database_url)
    from service.scheduling.workers import local_workers_alive

    with database_errors(settings.database_url):
        alive = local_workers_alive(settings.database_url, settings.worker_grace_seconds)
    print(f"{alive} worker(s) alive on this host")
    return 0 if alive > 0 else 1


def add_commands(sub: Subparsers) -> None:
    """Add `serve`, `worker` and `worker-health` to the `hpo` subcommands."""
    sp = sub.add_parser("serve", help="serve the API and supervise local worker processes")
    add_database_options(sp)
    sp.add_argument("--host", help="bind address (env HPO_HOST, default 127.0.0.1)")
    sp.add_argument("--port", type=int, help="port (env HPO_PORT, default 8000)")
    sp.add_argument("--workers", type=int, help="local worker processes (env HPO_WORKERS)")
    sp.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    sp.add_argument("--threads", type=int, help="torch threads per worker")
    sp.add_argument("--stop-deadline", type=float, help="seconds a stopping worker's trial gets")
    sp.add_argument("--no-migrate", action="store_true", help="skip `db upgrade` at start")
    sp.add_argument(
        "--auth",
        choices=["auto", "required", "off"],
        help="API tokens (env HPO_AUTH; auto: required unless listening on loopback)",
    )
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("worker", help="run one worker process against the database")
    add_database_options(sp)
    sp.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    sp.add_argument(
        "--gpus",
        help="all, or GPU indices like 0,1: one worker process per GPU slot "
        "(default: all GPUs when --device is not given)",
    )
    sp.add_argument(
        "--trials-per-gpu",
        type=int,
        default=1,
        help="worker processes (trials at once) per GPU; per node without GPUs",
    )
    sp.add_argument("--studies", help="only these studies (names or ids, comma-separated)")
    sp.add_argument(
        "--stop-deadline",
        type=float,
        help="after SIGTERM/SIGINT, seconds the current trial may still run "
        "(env HPO_STOP_DEADLINE_SECONDS, default 30)",
    )
    sp.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    sp.add_argument("--max-trials", type=int, help="exit after this many trials")
    sp.add_argument(
        "--until-idle", action="store_true", help="exit when no running study has budget left"
    )
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser(
        "worker-health", help="exit 0 if a worker on this host has a fresh heartbeat"
    )
    add_database_options(sp)
    sp.set_defaults(func=cmd_worker_health)
