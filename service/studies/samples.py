"""Bounded subsets of a large study's trials, chosen in SQL: which trials a downsampled
history shows, and an even sample of the complete ones (importances, boundary hits).

Each function returns a WHERE clause over Optuna's `trials` (`T`) for
`queries.study_history(..., where=...)`, so the chosen trials' columns are read in the same
few statements as a full history, and never more than a bounded number of rows.

The history's rule (`history_filter`), for a study of more than `HISTORY_MAX_POINTS` trials:
keep every trial whose number is a multiple of `stride = ceil(total / HISTORY_SAMPLE)` (an
even sample of every state), the last trial, and every complete trial that improved the
best-so-far value (its finite value strictly better than every earlier trial's, in number
order). The best-so-far curve drawn from the kept points is therefore exactly the full
history's. Should more than `MAX_IMPROVEMENTS` trials have improved it (a study whose every
trial beat the last), an even sample of those is kept, always with the final best.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import TrialState
from sqlalchemy import and_, case, false, func, or_, select
from sqlalchemy.orm import Session

from service.core.optuna_compat import rdb_models as om

FINITE = om.TrialValueModel.TrialValueType.FINITE
HISTORY_MAX_POINTS = 5000  # a history of more trials than this is downsampled ...
HISTORY_SAMPLE = 2000  # ... to an even sample of about this many, plus the improvements
MAX_IMPROVEMENTS = 2000
SAMPLE_TRIALS = 500  # complete trials behind importances and boundary hits


def improving_numbers(session: Session, optuna_study_id: int, direction: str) -> list[int]:
    """Numbers of the complete trials whose finite value is strictly better than every
    earlier complete trial's (trial-number order): where the best-so-far curve steps. One
    statement; a window function in the database, only the steps come back."""
    T, V = om.TrialModel, om.TrialValueModel
    value = case((V.value_type == FINITE, V.value))  # NULL for ±inf: never a best
    better = func.max if direction == "maximize" else func.min
    before = better(value).over(order_by=T.number, rows=(None, -1))
    ranked = (
        select(T.number.label("number"), value.label("value"), before.label("before"))
        .join(V, and_(V.trial_id == T.trial_id, V.objective == 0))
        .where(T.study_id == optuna_study_id, T.state == TrialState.COMPLETE)
        .subquery()
    )
    beats = (
        ranked.c.value > ranked.c.before
        if direction == "maximize"
        else ranked.c.value < ranked.c.before
    )
    numbers = session.scalars(
        select(ranked.c.number)
        .where(ranked.c.value.is_not(None), or_(ranked.c.before.is_(None), beats))
        .order_by(ranked.c.number)
    ).all()
    return [int(n) for n in numbers]


def _even(items: list[int], k: int) -> list[int]:
    """About k of `items`, evenly spaced, always with the last."""
    if len(items) <= k:
        return items
    step = len(items) / k
    kept = [items[int(i * step)] for i in range(k)]
    return sorted(set(kept) | {items[-1]})


def history_filter(
    session: Session, optuna_study_id: int, total: int, direction: str
) -> Any | None:
    """None when the whole history is small enough; else the WHERE clause of the module's
    rule (an even sample, the last trial, the best-so-far steps)."""
    if total <= HISTORY_MAX_POINTS:
        return None
    T = om.TrialModel
    stride = math.ceil(total / HISTORY_SAMPLE)
    steps = _even(improving_numbers(session, optuna_study_id, direction), MAX_IMPROVEMENTS)
    last = session.scalar(select(func.max(T.number)).where(T.study_id == optuna_study_id))
    keep = [*steps, *([] if last is None else [int(last)])]
    return or_(T.number % stride == 0, T.number.in_(keep) if keep else false())


def complete_sample(session: Session, optuna_study_id: int, n_complete: int) -> Any | None:
    """None when the study has at most `SAMPLE_TRIALS` complete trials; else a WHERE clause
    naming an even sample of about that many of them (every k-th complete trial in number
    order; deterministic, so a cached result can be recomputed alike). The sample is chosen
    once, here (a window over the study's complete trials), and named by id, so the reads
    that use the clause are primary-key lookups."""
    if n_complete <= SAMPLE_TRIALS:
        return None
    T = om.TrialModel
    stride = math.ceil(n_complete / SAMPLE_TRIALS)
    rank = func.row_number().over(order_by=T.number) - 1
    ranked = (
        select(T.trial_id.label("trial_id"), rank.label("rank"))
        .where(T.study_id == optuna_study_id, T.state == TrialState.COMPLETE)
        .subquery()
    )
    chosen = session.scalars(select(ranked.c.trial_id).where(ranked.c.rank % stride == 0))
    return T.trial_id.in_([int(t) for t in chosen])
