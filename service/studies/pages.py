"""Pages of a study's trials read from Optuna's tables by index, whatever the study's size.

`RDBStorage.get_all_trials` reads every trial of a study (with every intermediate value) to
show fifty of them. Here a page is the trial ids of one indexed range (`trials (study_id,
number)`, or `(study_id, state, number)` for one state; migration 0008), then the rows,
values and params of those ids only: a bounded number of statements, each reading at most
`limit` trials' rows. The count is an aggregate over the same index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optuna.trial import TrialState
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.optuna_compat import rdb_models as om
from service.studies.queries import _distribution

FINITE = om.TrialValueModel.TrialValueType.FINITE


def _local(utc: datetime | None) -> datetime | None:
    """Optuna's conversion of a stored (naive UTC) time to the naive local time a
    `FrozenTrial` carries, so that rows read here equal `get_all_trials`' trials."""
    if utc is None:
        return None
    return utc.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


@dataclass
class TrialRow:
    """The part of Optuna's `FrozenTrial` a trial list shows."""

    trial_id: int
    number: int
    state: TrialState
    datetime_start: datetime | None  # naive local time, as in a FrozenTrial
    datetime_complete: datetime | None
    params: dict[str, Any] = field(default_factory=dict)
    values: dict[int, float] = field(default_factory=dict)  # objective -> value (±inf as stored)


def trial_rows(session: Session, trial_ids: Sequence[int]) -> list[TrialRow]:
    """Those trials (three statements, by primary and unique keys), in the order given."""
    if not trial_ids:
        return []
    T, V, P = om.TrialModel, om.TrialValueModel, om.TrialParamModel
    ids = list(trial_ids)
    rows: dict[int, TrialRow] = {}
    for tid, number, state, start, end in session.execute(
        select(
            T.trial_id,
            T.number,
            T.state,
            T._datetime_start_utc,
            T._datetime_complete_utc,
        ).where(T.trial_id.in_(ids))
    ).all():
        rows[int(tid)] = TrialRow(
            trial_id=int(tid),
            number=int(number),
            state=TrialState(state),
            datetime_start=_local(start),
            datetime_complete=_local(end),
        )
    for tid, objective, value, value_type in session.execute(
        select(V.trial_id, V.objective, V.value, V.value_type).where(V.trial_id.in_(ids))
    ).all():
        stored = om.TrialValueModel.stored_repr_to_value(value, value_type)
        rows[int(tid)].values[int(objective)] = stored
    for tid, name, internal, dist_json in session.execute(
        select(P.trial_id, P.param_name, P.param_value, P.distribution_json)
        .where(P.trial_id.in_(ids))
        .order_by(P.trial_id, P.param_id)
    ).all():
        rows[int(tid)].params[name] = _distribution(dist_json).to_external_repr(internal)
    return [rows[t] for t in ids if t in rows]


def trial_page(
    session: Session,
    optuna_study_id: int,
    limit: int,
    offset: int,
    state: TrialState | None = None,
) -> tuple[int, list[TrialRow]]:
    """(trials of the study [in `state`], those at positions offset..offset+limit-1 in
    trial-number order): four statements, whatever the study's size."""
    T = om.TrialModel
    where = [T.study_id == optuna_study_id]
    if state is not None:
        where.append(T.state == state)
    total = session.scalar(select(func.count()).select_from(T).where(*where)) or 0
    ids = session.scalars(
        select(T.trial_id).where(*where).order_by(T.number).limit(limit).offset(offset)
    ).all()
    return int(total), trial_rows(session, [int(t) for t in ids])
