"""Which process a pid names: an identity that survives pid reuse.

A pid alone is not enough to find a process again later: once a process exits, the kernel
may give its pid to any new process. `process_start(pid)` adds when that process started
(`/proc/<pid>/stat` field 22, in clock ticks since boot), the boot it started in and the
pid namespace it lives in, so `process_alive(pid, start)` is true only for the very process
that was recorded. Linux only (it reads /proc); elsewhere the identity is None and nothing
is ever judged alive or stale by it.

A supervisor (`hpo serve`, `hpo worker --gpus`) hands its own identity to the workers it
starts in the `HPO_SUPERVISOR` environment variable, as `<pid>:<start>`; each worker
records it beside its own in the `hpo_workers` table.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

SUPERVISOR_ENV = "HPO_SUPERVISOR"


@lru_cache(maxsize=1)
def machine_scope() -> str:
    """`<boot id>/<pid namespace>`: the pids a process of this scope can see and signal.
    Empty parts where the kernel does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{boot}/{namespace}"


def process_start(pid: int) -> str | None:
    """`<start ticks>@<boot id>/<pid namespace>` of the live process `pid`; None when no
    such process runs (none, or a zombie that has exited) or /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # Field 2, the command name, may hold spaces and parentheses: count after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], fields[19]  # fields 3 and 22
    if state in ("Z", "X"):
        return None
    return f"{start_ticks}@{machine_scope()}"


def process_alive(pid: int | None, start: str | None) -> bool:
    """True only while the process recorded as (`pid`, `start`) still runs: False for a
    pid that exited or now names another process, and for an unknown `start`."""
    return pid is not None and start is not None and process_start(pid) == start


def in_this_scope(start: str | None) -> bool:
    """Whether a recorded identity belongs to this boot and pid namespace, i.e. whether
    `process_alive` can tell anything about it from here."""
    return start is not None and start.endswith(f"@{machine_scope()}")


def supervisor_identity() -> str | None:
    """`<pid>:<start>` of this process, for the environment of the workers it starts
    (`SUPERVISOR_ENV`); None where the start is unknown."""
    start = process_start(os.getpid())
    return None if start is None else f"{os.getpid()}:{start}"


def supervisor_from_env() -> tuple[int, str] | None:
    """(pid, start) of the supervisor that started this process, from `SUPERVISOR_ENV`;
    None when it was not started by one (or the value is malformed)."""
    raw = os.environ.get(SUPERVISOR_ENV, "")
    pid, _, start = raw.partition(":")
    if not pid.isdigit() or not start:
        return None
    return int(pid), start
