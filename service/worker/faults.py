"""Crash points for fault-injection tests: `HPO_FAULT_AT=<point>` makes the worker kill
itself with SIGKILL exactly when it reaches that point of a trial's life, as a power cut or
the OOM killer would. Unset (always, outside tests), each point is one dictionary lookup.

The points, in the order a trial passes them (`tests/test_fault_injection.py` kills a real
worker at each one and checks that nothing is lost or counted twice):
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "HPO_FAULT_AT"

POINTS = (
    "after_claim",  # the slot and its configuration are claimed; no Optuna trial yet
    "after_create",  # the Optuna trial exists (tagged with the claim); not linked yet
    "after_attach",  # the claim is linked to the trial; training not started
    "mid_train",  # the first epoch is written and reported
    "before_tell",  # trained and saved; Optuna not told
    "after_tell",  # Optuna has the final state; the claim is not finished
    "after_finish",  # the claim is finished; the clean-up (diagnosis, current trial) not done
)
# Besides these, `epoch:<n>` (e.g. `epoch:15`) kills it once epoch n is written and reported,
# before that epoch's checkpoint is saved (tests/test_resume_e2e.py).
EPOCH_PREFIX = "epoch:"


def crash_point(point: str, *, epoch: int | None = None) -> None:
    """SIGKILL this process if `HPO_FAULT_AT` names `point` (one of `POINTS`), or, given the
    `epoch` just reported, is `epoch:<epoch>`."""
    armed = os.environ.get(FAULT_ENV)
    if armed is not None and (armed == point or armed == f"{EPOCH_PREFIX}{epoch}"):
        os.kill(os.getpid(), signal.SIGKILL)
