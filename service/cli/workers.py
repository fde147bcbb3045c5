"""`hpo workers`: the worker registry over REST (`hpo worker`, which runs one, is in
`cli/processes.py`)."""

from __future__ import annotations

import argparse

from service.cli.options import Subparsers, add_client_command, client_of
from service.core.states import WorkerState


def cmd_workers(args: argparse.Namespace) -> int:
    """A table of the workers: state, host, pid, device, GPU, current trial, heartbeat age."""
    with client_of(args) as api:
        workers = api.workers(WorkerState(args.status) if args.status else None)
    print(
        f"{'id':>4}  {'status':<8} {'host':<20} {'pid':>7}  {'device':<8} {'gpu':<24} "
        f"{'trial':>6}  heartbeat"
    )
    for w in workers:
        gpu = "-" if not w["gpu_name"] else f"{w['gpu_name']} {w['gpu_memory_mb']} MiB"
        trial = "-" if w["current_trial_id"] is None else str(w["current_trial_id"])
        print(
            f"{w['id']:>4}  {w['status']:<8} {w['host'][:20]:<20} {w['pid']:>7}  "
            f"{w['device']:<8} {gpu[:24]:<24} {trial:>6}  {w['heartbeat_age_seconds']:.0f}s ago"
        )
    return 0


def add_commands(sub: Subparsers) -> None:
    """Add `workers`."""
    c = add_client_command(
        sub, "workers", cmd_workers, "list worker processes with their trial and heartbeat"
    )
    c.add_argument("--status", choices=[s.value for s in WorkerState])
