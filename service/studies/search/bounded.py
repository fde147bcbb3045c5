"""Samplers that read a bounded history: the most recent and the best `max_history` trials.

TPE and GP fit their models to every finished trial on every ask: at 100,000 trials that is
the algorithm's own cost, not coordination, and it grows without end. `BoundedHistorySampler`
hands the wrapped sampler a view of the study whose trial lists hold at most the
`max_history` most recent finished (COMPLETE or PRUNED) trials and the `max_history` best
COMPLETE ones (plus unfinished trials, which GP reads), from the process's incremental
`StudyHistory`; everything else about the study is the real one. A study with fewer finished
trials than `max_history` sees its whole history, so small studies sample exactly as before.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from service.core.optuna_compat import study_id_of
from service.studies.search.history import history_for


class _HistoryView:
    """A study whose `get_trials`/`_get_trials`/`trials` read the bounded history; every
    other attribute is the real study's."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        self._real = study
        self._bounded = trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = [t for t in self._bounded if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        return self.get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class BoundedHistorySampler(BaseSampler):
    """`sampler` reading at most the `max_history` most recent and `max_history` best
    finished trials of the study (see the module's docstring), from the database at `url`."""

    def __init__(self, sampler: BaseSampler, url: str, max_history: int) -> None:
        self.sampler = sampler
        self.url = url
        self.max_history = max_history
        self._view: tuple[int, _HistoryView] | None = None  # (trial id, view) of this ask

    def _study(self, study: optuna.Study, trial: FrozenTrial) -> optuna.Study:
        # One read per ask: the view is made in `before_trial`/`infer_relative_search_space`
        # (the first call of an ask) and reused by every `sample_*` of the same trial.
        if self._view is None or self._view[0] != trial._trial_id:
            history = history_for(self.url, study_id_of(study), study.study_name)
            trials = history.bounded_trials(self.max_history, study.directions[0])
            self._view = (trial._trial_id, _HistoryView(study, trials))
        return cast(optuna.Study, self._view[1])

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._view = None
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(self._study(study, trial), trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(self._study(study, trial), trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        view = self._study(study, trial)
        return self.sampler.sample_independent(view, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._view = None
        self.sampler.after_trial(study, trial, state, values)
