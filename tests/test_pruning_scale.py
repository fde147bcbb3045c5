"""The worker's trial path stays flat as a study grows (issue 13 §1).

- The indexed percentile rule decides exactly as Optuna's `PercentilePruner`/`MedianPruner`
  on the same history: a property test over random histories (NaN and ±inf included, every
  argument varied), and the database-backed pruner against `MedianPruner` on one study while
  other trials finish between its calls.
- `should_prune` and a bounded TPE ask issue the same number of SQL statements on a study of
  50 finished trials as on one of 500 (bulk-written into Optuna's tables).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.study import StudyDirection
from optuna.trial import TrialState
from sqlalchemy import event

from bench.bulk_fill_optuna import fill
from service.core.db.engine import get_engine, session_scope
from service.core.optuna_compat import create_running_trial
from service.core.optuna_storage import get_storage
from service.studies.search.bounded import BoundedHistorySampler
from service.studies.search.factories import build_sampler
from service.studies.search.history import StepValues, history_for
from service.studies.search.pruning import IndexedPercentilePruner, percentile_decision
from service.studies.search.space import suggest_params
from service.studies.service import create_study, get_study_row
from service.studies.spec import StudySpec
from service.worker.study_handles import open_study
from tests.conftest import tiny_spec, unique

value = st.one_of(
    st.floats(-10, 10, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1.0]),  # ties and specials
)
curve = st.dictionaries(st.integers(0, 6), value, max_size=6)


@settings(max_examples=400, deadline=None)
@given(
    completed=st.lists(curve, max_size=12),
    running=curve,
    maximize=st.booleans(),
    percentile=st.one_of(st.just(50.0), st.floats(0, 100)),
    n_startup=st.integers(0, 4),
    n_warmup=st.integers(0, 3),
    interval=st.integers(1, 3),
    n_min=st.integers(1, 4),
)
def test_decisions_equal_optunas_percentile_pruner(
    completed: list[dict[int, float]],
    running: dict[int, float],
    maximize: bool,
    percentile: float,
    n_startup: int,
    n_warmup: int,
    interval: int,
    n_min: int,
) -> None:
    direction = StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
    study = optuna.create_study(direction=direction)
    steps = StepValues()
    for values in completed:
        study.add_trial(optuna.trial.create_trial(value=0.0, intermediate_values=values))
        for step, v in values.items():
            steps.add(step, v)
    trial = optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values=running)
    kwargs: dict[str, Any] = {
        "n_startup_trials": n_startup,
        "n_warmup_steps": n_warmup,
        "interval_steps": interval,
        "n_min_trials": n_min,
    }
    reference: optuna.pruners.BasePruner
    if percentile == 50.0:
        reference = optuna.pruners.MedianPruner(**kwargs)
    else:
        reference = optuna.pruners.PercentilePruner(percentile, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's all-NaN slices, both sides
        expected = reference.prune(study, trial)
        got = percentile_decision(
            trial=trial,
            direction=direction,
            n_complete=len(completed),
            steps=steps,
            percentile=percentile,
            **kwargs,
        )
    assert got == expected


def _study(url: str, n: int, sampler: str = "random") -> tuple[StudySpec, int]:
    spec = StudySpec.model_validate(
        tiny_spec(
            unique("scale"),
            n_trials=50,
            sampler={"name": sampler, "seed": 0, "max_history": 40},
            pruner={"name": "median", "n_startup_trials": 2},
            objective={"metric": "val_accuracy", "max_epochs": 5},
        )
    )
    with session_scope(url) as session:
        created = create_study(session, spec)
        optuna_id = get_study_row(session, created.id).optuna_study_id
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
        "batch_size": optuna.distributions.CategoricalDistribution([16, 32]),
    }
    fill(url, optuna_id, n, dists, epochs=5, values=(0.3, 0.9), seed=n)
    return spec, optuna_id


def test_indexed_pruner_follows_the_database_like_median_pruner(database_url: str) -> None:
    spec, _ = _study(database_url, 30)
    study = open_study(database_url, spec, optuna.samplers.RandomSampler(seed=0))
    assert isinstance(study.pruner, IndexedPercentilePruner)
    reference = optuna.load_study(
        study_name=f"hpo:{spec.name}",
        storage=get_storage(database_url),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    other = optuna.load_study(study_name=f"hpo:{spec.name}", storage=get_storage(database_url))
    trial = create_running_trial(study, claim_id=1)
    decisions = []
    for step, v in enumerate([0.2, 0.25, 0.9, 0.95, 0.3]):
        trial.report(v, step)
        # Another worker finishes trials between our epochs: both must see them.
        for j in range(3):
            t = other.ask()
            for s in range(step + 1):
                t.report(0.4 + 0.1 * j + 0.01 * s, s)
            other.tell(t, 0.5 if j < 2 else None, state=None if j < 2 else TrialState.PRUNED)
        frozen = get_storage(database_url).get_trial(trial._trial_id)
        got = trial.should_prune()
        expected = reference.pruner.prune(reference, frozen)
        assert got == expected
        decisions.append(got)
    assert True in decisions and False in decisions  # both outcomes were exercised


@contextmanager
def _counting(url: str) -> Iterator[list[int]]:
    count = [0]

    def tick(*_: Any) -> None:
        count[0] += 1

    engines = {get_engine(url), get_storage(url).engine}
    for e in engines:
        event.listen(e, "before_cursor_execute", tick)
    try:
        yield count
    finally:
        for e in engines:
            event.remove(e, "before_cursor_execute", tick)


def _statements_per_trial(url: str, n: int, sampler: str) -> tuple[int, int]:
    """(statements of a bounded ask, statements of 3 reports + should_prune) on a study of
    `n` finished trials, after a first trial has warmed the process's view of the study."""
    spec, _ = _study(url, n, sampler)
    counts = []
    for i in range(2):
        study = open_study(url, spec, build_sampler(spec, i))
        with _counting(url) as ask:
            trial = create_running_trial(study, claim_id=1000 + i)
            suggest_params(trial, spec)
        with _counting(url) as prune:
            for step in range(3):
                trial.report(0.5, step)
                trial.should_prune()
        study.tell(trial, 0.5)
        counts.append((ask[0], prune[0]))
    return counts[-1]  # the second trial: the steady state


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_statements_per_trial_do_not_grow_with_the_study(database_url: str, sampler: str) -> None:
    small = _statements_per_trial(database_url, 50, sampler)
    large = _statements_per_trial(database_url, 500, sampler)
    assert small == large
    assert large[1] <= 3 * 5  # per epoch: Optuna's report (3) + the pruner's refresh (1-2)


def test_bounded_history_is_the_whole_history_of_a_small_study(database_url: str) -> None:
    """Below `max_history` finished trials TPE samples exactly as without the bound; above,
    it reads the most recent and the best `max_history` trials only."""
    # Two studies with the same 30 trials (the fill is seeded by N): one read by TPE as
    # Optuna does, one through the bound.
    spec, optuna_id = _study(database_url, 30, "tpe")
    twin, _ = _study(database_url, 30, "tpe")
    storage = get_storage(database_url)
    plain = optuna.load_study(
        study_name=f"hpo:{spec.name}", storage=storage, sampler=optuna.samplers.TPESampler(seed=3)
    )
    bounded = BoundedHistorySampler(optuna.samplers.TPESampler(seed=3), database_url, 1000)
    wrapped = optuna.load_study(study_name=f"hpo:{twin.name}", storage=storage, sampler=bounded)
    for claim in (1, 2, 3):
        a = create_running_trial(plain, claim_id=claim)
        b = create_running_trial(wrapped, claim_id=claim)
        assert suggest_params(a, spec) == suggest_params(b, spec)
        if claim != 2:  # one stays RUNNING: TPE's constant liar reads it
            plain.tell(a, 0.5)
            wrapped.tell(b, 0.5)

    small = history_for(database_url, optuna_id, f"hpo:{spec.name}").bounded_trials(
        5, StudyDirection.MAXIMIZE
    )
    finished = storage.get_all_trials(optuna_id, states=(TrialState.COMPLETE, TrialState.PRUNED))
    recent = {t.number for t in finished[-5:]}
    best = {t.number for t in sorted(finished, key=lambda t: -(t.value or -1))[:5]}
    assert {t.number for t in small if t.state.is_finished()} == recent | best
