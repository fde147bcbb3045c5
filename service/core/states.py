"""The service's state vocabularies, one StrEnum each.

A StrEnum member equals its string, so the stored columns and the API keep the strings they
always had (clients parse them): studies end ``completed``/``failed``/``stopped``; our trial
records and the API's trial states use Optuna's lower-cased names (``complete``, ``fail``,
``pruned``), since the API shows Optuna's trials.
"""

from __future__ import annotations

from enum import StrEnum


class StudyState(StrEnum):
    """`hpo_studies.status`: running -> completed | failed | stopped."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


class TrialState(StrEnum):
    """`hpo_trials.state` and the API's trial states: claimed -> running -> complete |
    pruned | fail. `waiting` is Optuna's state for an enqueued trial not yet started."""

    CLAIMED = "claimed"
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"


class WorkerState(StrEnum):
    """`hpo_workers.status`: running -> stopped; `dead` when its heartbeats stopped."""

    RUNNING = "running"
    STOPPED = "stopped"
    DEAD = "dead"


class JobState(StrEnum):
    """`hpo_learning_curves.state`: queued -> running -> complete | fail; running -> queued
    when its worker died."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAIL = "fail"
