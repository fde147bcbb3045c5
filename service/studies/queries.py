"""Aggregate SQL over Optuna's tables for study lists, histories and curves.

`RDBStorage.get_all_trials` loads every trial with its params, attributes and every
intermediate value: 5,000 trials x 100 epochs is half a million rows to read a study's
counts. These queries read only the columns a summary, a history or a chart needs, through
Optuna's own table mappings (the schema `hpo db upgrade` created), never writing to them.
Each takes the caller's session and never commits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.trial import TrialState
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from service.core.db.models import CurvePoint, Study, TrialRecord
from service.core.optuna_compat import rdb_models as om
from service.studies.schemas import TrialCounts
from service.studies.spec import load_spec

FINITE = om.TrialValueModel.TrialValueType.FINITE


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def trial_counts(session: Session, optuna_study_ids: Sequence[int]) -> dict[int, TrialCounts]:
    """Trial counts by state for each Optuna study id: one GROUP BY."""
    out = {sid: TrialCounts() for sid in optuna_study_ids}
    if not optuna_study_ids:
        return out
    T = om.TrialModel
    rows = session.execute(
        select(T.study_id, T.state, func.count())
        .where(T.study_id.in_(optuna_study_ids))
        .group_by(T.study_id, T.state)
    ).all()
    for sid, state, n in rows:
        setattr(out[sid], TrialState(state).name.lower(), int(n))
    return out


def _best_value_query(maximize: bool, optuna_study_ids: Sequence[int]) -> Any:
    T, V = om.TrialModel, om.TrialValueModel
    agg = func.max(V.value) if maximize else func.min(V.value)
    return (
        select(T.study_id, agg)
        .join(V, and_(V.trial_id == T.trial_id, V.objective == 0))
        .where(
            T.study_id.in_(optuna_study_ids),
            T.state == TrialState.COMPLETE,
            V.value_type == FINITE,
        )
        .group_by(T.study_id)
    )


def best_values(session: Session, directions: dict[int, str]) -> dict[int, float]:
    """Best finite objective value of each Optuna study id ({id: "maximize"|"minimize"})."""
    out: dict[int, float] = {}
    for maximize in (True, False):
        ids = [s for s, d in directions.items() if (d == "maximize") == maximize]
        if ids:
            for sid, value in session.execute(_best_value_query(maximize, ids)).all():
                if _finite(value) is not None:
                    out[sid] = float(value)
    return out


def best_trial_id(session: Session, optuna_study_id: int, direction: str) -> int | None:
    """The complete trial with the best finite value; ties go to the earliest trial."""
    T, V = om.TrialModel, om.TrialValueModel
    order = V.value.desc() if direction == "maximize" else V.value.asc()
    trial_id = session.scalar(
        select(T.trial_id)
        .join(V, and_(V.trial_id == T.trial_id, V.objective == 0))
        .where(
            T.study_id == optuna_study_id,
            T.state == TrialState.COMPLETE,
            V.value_type == FINITE,
        )
        .order_by(order, T.trial_id)
        .limit(1)
    )
    return None if trial_id is None else int(trial_id)


@lru_cache(maxsize=4096)
def _distribution(distribution_json: str) -> BaseDistribution:
    return json_to_distribution(distribution_json)


@dataclass
class History:
    """A study's trials, one list entry per trial in trial-number order."""

    trial_id: list[int] = field(default_factory=list)
    number: list[int] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    duration_seconds: list[float | None] = field(default_factory=list)
    last_step: list[int | None] = field(default_factory=list)
    reason: list[str | None] = field(default_factory=list)
    params: dict[str, list[Any]] = field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)


def study_history(session: Session, study: Study, where: Any | None = None) -> History:
    """Every trial's state, value, params, duration and, for pruned and failed trials, why;
    `where` (a condition on Optuna's `trials`, e.g. from `studies.samples`): only those."""
    T, V, P = om.TrialModel, om.TrialValueModel, om.TrialParamModel
    IV = om.TrialIntermediateValueModel
    sid = study.optuna_study_id
    metric = load_spec(study.spec).objective.metric
    chosen = T.study_id == sid if where is None else and_(T.study_id == sid, where)
    h = History()
    trials = session.execute(
        select(
            T.trial_id,
            T.number,
            T.state,
            T._datetime_start_utc,
            T._datetime_complete_utc,
            V.value,
            V.value_type,
        )
        .outerjoin(V, and_(V.trial_id == T.trial_id, V.objective == 0))
        .where(chosen)
        .order_by(T.number)
    ).all()
    params = session.execute(
        select(P.trial_id, P.param_name, P.param_value, P.distribution_json)
        .join(T, T.trial_id == P.trial_id)
        .where(chosen)
    ).all()
    # The last reported epoch of pruned trials: where and at what value they stopped.
    last = (
        select(IV.trial_id, func.max(IV.step).label("step"))
        .join(T, T.trial_id == IV.trial_id)
        .where(chosen, T.state == TrialState.PRUNED)
        .group_by(IV.trial_id)
        .subquery()
    )
    stops = session.execute(
        select(last.c.trial_id, last.c.step, IV.intermediate_value).join(
            IV, and_(IV.trial_id == last.c.trial_id, IV.step == last.c.step)
        )
    ).all()
    with_error: list[ColumnElement[bool]] = [TrialRecord.error.is_not(None)]
    if where is None:
        with_error.append(TrialRecord.study_id == study.id)
    else:  # by the unique index on optuna_trial_id, not a walk of the study's records
        with_error.append(TrialRecord.optuna_trial_id.in_(select(T.trial_id).where(chosen)))
    errors = dict(
        session.execute(
            select(TrialRecord.optuna_trial_id, TrialRecord.error).where(*with_error)
        ).all()
    )
    stop_at = {tid: (int(step), _finite(v)) for tid, step, v in stops}
    index: dict[int, int] = {}
    for tid, number, state, start, end, value, value_type in trials:
        index[tid] = len(h.trial_id)
        st = TrialState(state)
        h.trial_id.append(int(tid))
        h.number.append(int(number))
        h.state.append(st.name.lower())
        complete = st == TrialState.COMPLETE and value_type == FINITE
        h.value.append(_finite(value) if complete else None)
        h.duration_seconds.append(
            (end - start).total_seconds() if start is not None and end is not None else None
        )
        step, stop_value = stop_at.get(tid, (None, None))
        h.last_step.append(step)
        reason = errors.get(tid)
        if st == TrialState.PRUNED and reason is None and step is not None:
            shown = "n/a" if stop_value is None else f"{stop_value:.4g}"
            reason = f"pruned after epoch {step} ({metric} {shown})"
        h.reason.append(reason)
    n = len(h.trial_id)
    for tid, name, internal, dist_json in params:
        dist = _distribution(dist_json)
        if name not in h.params:
            h.params[name] = [None] * n
            h.distributions[name] = dist
        h.params[name][index[tid]] = dist.to_external_repr(internal)
    return h


@dataclass
class CurveTrial:
    trial_id: int
    number: int
    state: str
    value: float | None


def curve_trials(
    session: Session, optuna_study_id: int, direction: str, top: int
) -> list[CurveTrial]:
    """The trials worth a curve: every started trial of a study of at most `top`; else the
    running ones (at most `top`) and the `top` best complete ones. In trial-number order."""
    T, V = om.TrialModel, om.TrialValueModel
    started = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    base = (
        select(T.trial_id, T.number, T.state, V.value, V.value_type)
        .outerjoin(V, and_(V.trial_id == T.trial_id, V.objective == 0))
        .where(T.study_id == optuna_study_id)
    )
    n_started = session.scalar(
        select(func.count())
        .select_from(T)
        .where(T.study_id == optuna_study_id, T.state.in_(started))
    )
    if (n_started or 0) <= top:
        rows = list(session.execute(base.where(T.state.in_(started))).all())
    else:
        order = V.value.desc() if direction == "maximize" else V.value.asc()
        rows = list(
            session.execute(
                base.where(T.state == TrialState.RUNNING).order_by(T.number).limit(top)
            ).all()
        )
        rows += session.execute(
            base.where(T.state == TrialState.COMPLETE, V.value_type == FINITE)
            .order_by(order, T.trial_id)
            .limit(top)
        ).all()
    out = []
    for tid, number, state, value, value_type in rows:
        st = TrialState(state)
        complete = st == TrialState.COMPLETE and value_type == FINITE
        out.append(
            CurveTrial(int(tid), int(number), st.name.lower(), _finite(value) if complete else None)
        )
    return sorted(out, key=lambda t: t.number)


def trial_exists(session: Session, trial_id: int) -> bool:
    found = session.scalar(select(TrialRecord.id).where(TrialRecord.optuna_trial_id == trial_id))
    return found is not None


def curves_of(
    session: Session, trial_ids: Iterable[int], metrics: Sequence[str] | None = None
) -> dict[int, dict[str, list[tuple[int, float]]]]:
    """Curve points of several trials: {trial_id: {metric: [(step, value), ...]}}."""
    ids = list(trial_ids)
    out: dict[int, dict[str, list[tuple[int, float]]]] = {t: {} for t in ids}
    if not ids:
        return out
    C = CurvePoint
    query = select(C.trial_id, C.metric, C.step, C.value).where(C.trial_id.in_(ids))
    if metrics is not None:
        query = query.where(C.metric.in_(list(metrics)))
    rows = session.execute(query.order_by(C.trial_id, C.metric, C.step)).all()
    for tid, metric, step, value in rows:
        out[tid].setdefault(metric, []).append((int(step), float(value)))
    return out
