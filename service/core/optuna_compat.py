"""The few places where the service needs what Optuna keeps private, in one module.

Checked against Optuna 5.0 (pyproject caps ``optuna<6``). Each function says why no public
API serves; when Optuna changes one of these, only this module changes.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages._rdb import models as rdb_models  # Optuna's own table mappings
from optuna.trial import FrozenTrial, TrialState

__all__ = ["create_running_trial", "rdb_models", "trial_id_of"]


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (`trials.trial_id`), which our tables reference.

    Optuna exposes only the per-study `number` publicly; mapping it back costs a query
    (`storage.get_trial_id_from_study_id_trial_number`) per call, on the hot path.
    """
    trial_id: int = trial._trial_id
    return trial_id


def create_running_trial(study: optuna.Study, fixed_params: dict[str, Any]) -> optuna.Trial:
    """A trial created directly in state RUNNING that will take `fixed_params`.

    Optuna's public route, `enqueue_trial` + `ask`, goes through state WAITING, and popping
    WAITING is racy on SQLite (no ``SELECT ... FOR UPDATE``): two workers could take the same
    configuration. It is created through the study's own storage: `load_study` wraps an
    RDBStorage in a cache, which must know the trial (one made through the RDBStorage
    directly fails the first `suggest_*` with a KeyError).
    """
    template = optuna.trial.create_trial(
        state=TrialState.RUNNING, system_attrs={"fixed_params": fixed_params}
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, trial_id)
