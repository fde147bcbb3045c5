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

__all__ = [
    "CLAIM_ATTR",
    "create_running_trial",
    "get_trials_since",
    "percentile_rule_helpers",
    "rdb_models",
    "study_id_of",
    "trial_id_of",
]

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


def study_id_of(study: optuna.Study) -> int:
    """The storage id of a study (`studies.study_id`); Optuna exposes only its name."""
    study_id: int = study._study_id
    return study_id


def get_trials_since(
    storage: optuna.storages.RDBStorage, study_id: int, ids: set[int], watermark: int
) -> list[FrozenTrial]:
    """The trials of `study_id` whose id is in `ids` (those at most `watermark`) or above
    `watermark` (everything when it is -1), in id order, each with all its attributes.

    What `_CachedStorage` reads to refresh itself (`RDBStorage._get_trials`); no public API
    reads "only the trials that changed", and `get_all_trials` reads all N every time.
    """
    return storage._get_trials(
        study_id, states=None, included_trial_ids=ids, trial_id_greater_than=watermark
    )


def percentile_rule_helpers() -> tuple[Any, Any]:
    """Optuna's own `_is_first_in_interval_step` and `_get_best_intermediate_result_over_steps`
    (`optuna.pruners._percentile`), so the indexed percentile rule decides exactly as
    `PercentilePruner` on the running trial's side."""
    from optuna.pruners import _percentile

    return (
        _percentile._is_first_in_interval_step,
        _percentile._get_best_intermediate_result_over_steps,
    )
