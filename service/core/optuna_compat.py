"""The few places where the service needs what Optuna keeps private, in one module.

Checked against Optuna 5.0 (pyproject caps ``optuna<6``). Each function says why no public
API serves; when Optuna changes one of these, only this module changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.storages._rdb import models as rdb_models  # Optuna's own table mappings
from optuna.trial import FrozenTrial, TrialState

__all__ = ["CLAIM_ATTR", "create_running_trial", "rdb_models", "trial_id_of"]

# The system attribute naming the `hpo_trials` record (the claim) a trial was created for.
# It is written with the trial, in Optuna's own transaction, so that no trial ever exists
# that its claim cannot find: a worker killed between creating the trial and linking it to
# its claim leaves a trial the reaper still finds (`scheduling.claims`).
CLAIM_ATTR = "hpo:claim"


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (`trials.trial_id`), which our tables reference.

    Optuna exposes only the per-study `number` publicly; mapping it back costs a query
    (`storage.get_trial_id_from_study_id_trial_number`) per call, on the hot path.
    """
    trial_id: int = trial._trial_id
    return trial_id


def create_running_trial(
    study: optuna.Study,
    claim_id: int,
    fixed_params: dict[str, Any] | None = None,
    started_at: datetime | None = None,
) -> optuna.Trial:
    """A trial of `study` created directly in state RUNNING for the claim `claim_id`, with
    `fixed_params` (an enqueued configuration, a re-run, a grid point) if given; else its
    sampler suggests every parameter, as after `study.ask()`.

    Why not `ask()`: it creates a bare trial, and the link to our claim could only be
    written afterwards, leaving a window in which a killed worker leaves a RUNNING trial
    that nothing refers to. Here the claim's id is a system attribute of the template, which
    `create_new_trial` inserts in the same transaction as the trial. Optuna's own route for
    fixed parameters, `enqueue_trial` + `ask`, goes through state WAITING, and popping
    WAITING is racy on SQLite (no ``SELECT ... FOR UPDATE``). Constructing `optuna.Trial`
    runs the sampler's `before_trial`, as `ask` does. The trial is created through the
    study's own storage: `load_study` wraps an RDBStorage in a cache, which must know the
    trial (one made through the RDBStorage directly fails the first `suggest_*`).

    `started_at` (naive UTC, our tables' convention): the trial's start, e.g. the claim's
    time, so that Optuna's start and ours agree; default now.
    """
    system_attrs: dict[str, Any] = {CLAIM_ATTR: claim_id}
    if fixed_params:
        system_attrs["fixed_params"] = fixed_params
    template = optuna.trial.create_trial(state=TrialState.RUNNING, system_attrs=system_attrs)
    if started_at is not None:
        # FrozenTrial holds local naive time; Optuna's column holds UTC.
        template.datetime_start = started_at.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, trial_id)
