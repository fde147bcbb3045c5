"""Local worker processes die with their supervisor, however it dies (even SIGKILL).

Two mechanisms, each covering the other's gap:

- a lifeline pipe: the supervisor keeps the write end and never writes; each worker it
  starts inherits the read end and watches it from a thread. When the supervisor is gone
  the kernel closes the write end and the read returns end-of-file (POSIX, any platform;
  it also works when the worker was started by a thread that has since ended);
- on Linux, the parent-death signal (`prctl(PR_SET_PDEATHSIG)`), which needs no thread
  in the worker and holds even while its Python code is busy.

Either way the worker receives SIGTERM, its ordinary stop: it takes no new trial, its
current trial may finish within the stop deadline, it records the stop and exits.

This module is imported first thing by a starting worker: keep its imports light.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import stat
import sys
import threading

from service.core.processes import SUPERVISOR_ENV, supervisor_from_env, supervisor_identity

log = logging.getLogger("hpo.worker")

LIFELINE_FD_ENV = "HPO_LIFELINE_FD"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Lifeline:
    """The supervisor's end: a pipe whose read end its workers inherit. Pass
    `child_env()` into a worker's environment and `pass_fds` to `subprocess.Popen`."""

    def __init__(self) -> None:
        # Both ends are non-inheritable: the read end reaches a worker only through
        # pass_fds, and the write end never leaves this process.
        self.read_fd, self.write_fd = os.pipe()
        self.identity = supervisor_identity()

    @property
    def pass_fds(self) -> tuple[int]:
        """The file descriptors a worker must inherit."""
        return (self.read_fd,)

    def child_env(self) -> dict[str, str]:
        """Environment variables telling a worker its lifeline and its supervisor."""
        env = {LIFELINE_FD_ENV: str(self.read_fd)}
        if self.identity is not None:
            env[SUPERVISOR_ENV] = self.identity
        return env


def hold_on() -> None:
    """In a worker a supervisor started: receive SIGTERM once the supervisor is gone.
    Call it before anything slow; does nothing in a process no supervisor started."""
    raw_fd = os.environ.pop(LIFELINE_FD_ENV, "")
    supervisor = supervisor_from_env()
    if supervisor is not None and os.getppid() == supervisor[0]:
        _parent_death_signal(supervisor[0])
    if raw_fd.isdigit() and _is_pipe(int(raw_fd)):
        threading.Thread(target=_watch, args=(int(raw_fd),), name="lifeline", daemon=True).start()


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:  # not inherited after all
        return False


def _parent_death_signal(supervisor_pid: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return
    except (OSError, AttributeError) as e:  # no libc to load, or no prctl in it
        log.warning("no parent-death signal: %s", e)
        return
    # The supervisor may have died before the prctl: then we were re-parented already.
    if os.getppid() != supervisor_pid:
        _supervisor_gone()


def _watch(fd: int) -> None:
    try:
        while os.read(fd, 1):  # the supervisor never writes: this returns at end-of-file
            pass
    except OSError as e:
        log.warning("lifeline unreadable (%s); relying on the parent-death signal", e)
        return
    _supervisor_gone()


def _supervisor_gone() -> None:
    log.warning("the supervisor of worker process %d is gone; stopping", os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)
