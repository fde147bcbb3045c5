"""`hpo workers`: the worker registry over REST (`hpo worker`, which runs one, is in
`cli/processes.py`)."""

from __future__ import annotations

import argparse

from service.cli.options import Subparsers, add_client_command, client_of
from service.cli.output import print_json, table, wants_json
from service.core.states import WorkerState


def cmd_workers(args: argparse.Namespace) -> int:
    """A table of the workers: state, host, pid, device, GPU, current trial, heartbeat age
    (JSON: the API's list)."""
    with client_of(args) as api:
        workers = api.workers(args.status)
    if wants_json(args):
        print_json(workers)
        return 0
    table(
        ("id", "status", "host", "pid", "device", "gpu", "trial", "heartbeat"),
        (
            (
                w["id"],
                w["status"],
                w["host"],
                w["pid"],
                w["device"],
                w["gpu_name"] and f"{w['gpu_name']} {w['gpu_memory_mb']} MiB",
                w["current_trial_id"],
                f"{w['heartbeat_age_seconds']:.0f}s ago",
            )
            for w in workers
        ),
    )
    return 0


def add_commands(sub: Subparsers) -> None:
    """Add `workers`."""
    c = add_client_command(
        sub, "workers", cmd_workers, "list worker processes with their trial and heartbeat"
    )
    c.add_argument("--status", choices=[s.value for s in WorkerState])
