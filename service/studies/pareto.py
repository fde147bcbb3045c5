"""A study's objectives as the API shows them, and a multi-objective study's Pareto front.

The front is computed from the complete trials' values read with one SQL query over Optuna's
`trial_values` (not `Study.best_trials`, which loads every trial with its params and
intermediate values), filtered in Python: a trial is on the front when no other complete
trial is at least as good in every objective and better in one (Deb et al. 2002, the
definition Optuna's `best_trials` uses; equal value vectors are both kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import optuna
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.trial import TrialState
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.db.models import Study
from service.core.errors import Conflict
from service.core.optuna_compat import rdb_models as om
from service.studies.schemas import ObjectiveOut, ParetoFront, ParetoTrial
from service.studies.spec import StudySpec, load_spec

FINITE = om.TrialValueModel.TrialValueType.FINITE


class SeveralObjectives(Conflict):
    """`/best` of a multi-objective study: it has a front, not one best trial (409)."""

    def __init__(self, study_id: int) -> None:
        super().__init__(
            f"study {study_id} has several objectives: it has no single best trial; its "
            f"Pareto front is GET /api/studies/{study_id}/pareto"
        )


class CompleteTrial(NamedTuple):
    number: int
    values: list[float]  # one per objective


def is_multi_objective(spec: StudySpec) -> bool:
    return spec.objectives is not None


def objectives_of(spec: StudySpec) -> list[ObjectiveOut]:
    """What the study optimizes, in Optuna's value order: `objectives`, or the one
    `objective`."""
    if spec.objectives is None:
        return [ObjectiveOut(metric=spec.objective.metric, direction=str(spec.objective.direction))]
    return [ObjectiveOut(metric=o.metric, direction=str(o.direction)) for o in spec.objectives]


def optuna_directions(spec: StudySpec) -> list[optuna.study.StudyDirection]:
    """The directions the Optuna study is created with, one per objective."""
    return [
        optuna.study.StudyDirection.MAXIMIZE
        if o.direction == "maximize"
        else optuna.study.StudyDirection.MINIMIZE
        for o in objectives_of(spec)
    ]


def non_dominated(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices (ascending) of the points no other point dominates.

    `points`: n vectors of k finite values; `maximize[j]`: whether objective j is maximized.
    Sorted lexicographically on the minimization form, a point can only be dominated by one
    before it, and (domination being transitive) then by a point of the front kept so far:
    O(n log n + n·f) for a front of f points.
    """
    signs = [-1.0 if m else 1.0 for m in maximize]
    costs = [tuple(s * v for s, v in zip(signs, p, strict=True)) for p in points]
    front: list[int] = []
    for i in sorted(range(len(costs)), key=lambda i: costs[i]):
        c = costs[i]
        if not any(_dominates(costs[j], c) for j in front):
            front.append(i)
    return sorted(front)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


@lru_cache(maxsize=4096)
def _distribution(distribution_json: str) -> BaseDistribution:
    return json_to_distribution(distribution_json)


def complete_values(session: Session, optuna_study_id: int, k: int) -> dict[int, CompleteTrial]:
    """The complete trials of a study whose `k` values are all finite: {trial id: (number,
    values)}; one query over Optuna's `trial_values`."""
    T, V = om.TrialModel, om.TrialValueModel
    rows = session.execute(
        select(T.trial_id, T.number, V.objective, V.value, V.value_type)
        .join(V, V.trial_id == T.trial_id)
        .where(T.study_id == optuna_study_id, T.state == TrialState.COMPLETE)
    ).all()
    by_trial: dict[int, tuple[int, dict[int, float | None]]] = {}
    for tid, number, objective, value, value_type in rows:
        values = by_trial.setdefault(int(tid), (int(number), {}))[1]
        values[int(objective)] = float(value) if value_type == FINITE else None
    out: dict[int, CompleteTrial] = {}
    for tid, (number, values) in by_trial.items():
        vector = [values.get(j) for j in range(k)]
        if all(v is not None for v in vector):
            out[tid] = CompleteTrial(number, [float(v) for v in vector if v is not None])
    return out


def pareto_front(session: Session, study: Study) -> ParetoFront:
    """The study's Pareto front over its complete trials whose every value is finite (any
    study: a single-objective one's front is its best trials)."""
    spec = load_spec(study.spec)
    objectives = objectives_of(spec)
    P = om.TrialParamModel
    complete = complete_values(session, study.optuna_study_id, len(objectives))
    ids = list(complete)
    numbers = [complete[t].number for t in ids]
    points = [complete[t].values for t in ids]
    front = non_dominated(points, [o.direction == "maximize" for o in objectives])
    params: dict[int, dict[str, object]] = {ids[i]: {} for i in front}
    if params:
        for tid, name, internal, dist_json in session.execute(
            select(P.trial_id, P.param_name, P.param_value, P.distribution_json).where(
                P.trial_id.in_(list(params))
            )
        ).all():
            params[int(tid)][name] = _distribution(dist_json).to_external_repr(internal)
    sign = -1.0 if objectives[0].direction == "maximize" else 1.0
    front.sort(key=lambda i: (sign * points[i][0], numbers[i]))
    return ParetoFront(
        objectives=objectives,
        trials=[
            ParetoTrial(trial_id=ids[i], number=numbers[i], values=points[i], params=params[ids[i]])
            for i in front
        ],
    )
