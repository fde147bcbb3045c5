"""An incremental, per-process view of a study's finished trials, for the worker's hot path.

Optuna's pruners and samplers read the study's whole history on every call
(`study.get_trials`): N trials per epoch and per ask, which grows with the study. A
`StudyHistory` reads the history once per process, then only what changed, the way Optuna's
own `_CachedStorage` does (trials above a watermark id, plus the ids it saw unfinished), and
keeps just what the hot path needs:

- `StepValues`: per step, the sorted intermediate values of the COMPLETE trials and how many
  there are (NaN included), so a percentile is read in O(1) (`search.pruning`);
- `BoundedTrials`: the most recent `m` finished (COMPLETE or PRUNED) trials and the best `m`
  COMPLETE ones, as FrozenTrials, for samplers with a bounded history (`search.bounded`).

Each has its own `Cursor` (watermark + unfinished ids), so either can be read alone.

The first read of a study costs one pass over its trials in SQL (values, not FrozenTrials);
each later refresh of the per-step values costs one statement (two when trials finished), and
of the bounded history a handful (Optuna's own trial loader for the new and the unfinished
trials), whatever the study's size. Every worker process keeps its own view; trials of other
processes are seen on the next refresh. Like Optuna's cache, a trial whose id is below the
watermark but whose insert committed after a refresh is never seen (ids are handed out before
commit on PostgreSQL); both lose the same rare trial.
"""

from __future__ import annotations

import bisect
import heapq
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import func, not_, select, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from service.core.db.engine import get_engine
from service.core.optuna_compat import get_trials_since, rdb_models
from service.core.optuna_storage import get_storage

_T = rdb_models.TrialModel
_IV = rdb_models.TrialIntermediateValueModel
_V = rdb_models.TrialValueModel
_IVType = _IV.TrialIntermediateValueType
_VType = _V.TrialValueType

UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)
SAMPLED = (TrialState.COMPLETE, TrialState.PRUNED)  # what TPE and GP read


@dataclass
class StepValues:
    """Per step, the COMPLETE trials' intermediate values: `count[step]` counts every value
    (NaN included, as the percentile rule's `n_min_trials` does) and `sorted[step]` the
    non-NaN ones in ascending order (±inf included)."""

    count: dict[int, int] = field(default_factory=dict)
    sorted: dict[int, list[float]] = field(default_factory=dict)

    def add(self, step: int, value: float) -> None:
        self.count[step] = self.count.get(step, 0) + 1
        if not math.isnan(value):
            bisect.insort(self.sorted.setdefault(step, []), value)


class BoundedTrials:
    """The most recent `m` finished trials (by id) and the best `m` COMPLETE ones."""

    def __init__(self, m: int, direction: StudyDirection) -> None:
        self.m = m
        self.sign = 1.0 if direction == StudyDirection.MINIMIZE else -1.0
        self.recent: deque[FrozenTrial] = deque(maxlen=m)
        self._best: list[tuple[float, int, FrozenTrial]] = []  # max-heap of the best m by -key

    def add(self, trial: FrozenTrial) -> None:
        """Take a finished trial (in increasing id order for `recent`)."""
        if trial.state not in SAMPLED:
            return
        self.recent.append(trial)
        if trial.state == TrialState.COMPLETE and trial.values and not math.isnan(trial.values[0]):
            key = self.sign * trial.values[0]
            item = (-key, -trial._trial_id, trial)
            if len(self._best) < self.m:
                heapq.heappush(self._best, item)
            elif item > self._best[0]:
                heapq.heapreplace(self._best, item)

    def trials(self) -> list[FrozenTrial]:
        """The union of recent and best, in trial-number order (what samplers expect)."""
        by_id = {t._trial_id: t for t in self.recent}
        by_id.update((t._trial_id, t) for _, _, t in self._best)
        return sorted(by_id.values(), key=lambda t: t.number)


class Cursor:
    """Where one consumer's reading of a study stands: the highest trial id read and the
    ids at or below it last seen unfinished. `advance` returns the trials that finished
    since (id and state), in one indexed statement whatever the study's size."""

    def __init__(self, study_id: int) -> None:
        self.study_id = study_id
        self.watermark = -1
        self.unfinished: set[int] = set()

    def start(self, conn: Connection) -> list[ColumnElement[bool]]:
        """Place the cursor at the study's present; the filter of the trials it covers
        (at most the watermark, not unfinished), for a first read in SQL."""
        w = conn.scalar(select(func.max(_T.trial_id)).where(_T.study_id == self.study_id))
        self.watermark = -1 if w is None else int(w)
        self.unfinished = set(
            conn.scalars(
                select(_T.trial_id).where(
                    _T.study_id == self.study_id,
                    _T.state.in_(UNFINISHED),
                    _T.trial_id <= self.watermark,
                )
            )
        )
        where = [_T.study_id == self.study_id, _T.trial_id <= self.watermark]
        if self.unfinished:
            where.append(not_(_T.trial_id.in_(self.unfinished)))
        return where

    def advance(self, conn: Connection) -> list[tuple[int, TrialState]]:
        """The trials finished since the last call, (id, state) in id order."""
        # Two index ranges, not one OR (which SQLite answers by scanning the study's rows).
        query = select(_T.trial_id, _T.state).where(
            _T.study_id == self.study_id, _T.trial_id > self.watermark
        )
        if self.unfinished:
            seen = select(_T.trial_id, _T.state).where(_T.trial_id.in_(self.unfinished))
            query = union_all(query, seen)  # type: ignore[assignment]
        rows = sorted(conn.execute(query).all())
        finished = []
        for trial_id, state in rows:
            self.watermark = max(self.watermark, trial_id)
            if state.is_finished():
                self.unfinished.discard(trial_id)
                finished.append((trial_id, state))
            else:
                self.unfinished.add(trial_id)
        return finished


class StudyHistory:
    """What the worker's hot path reads of one study's finished trials, kept up to date
    incrementally (see the module's docstring). Thread-safe; one per (url, study id) and
    process, from `history_for`."""

    def __init__(self, url: str, study_id: int) -> None:
        self.url = url
        self.study_id = study_id
        self._lock = threading.Lock()
        self.n_complete = 0
        self._steps: tuple[Cursor, StepValues] | None = None
        self._bounded: tuple[Cursor, BoundedTrials] | None = None

    def step_values(self) -> StepValues:
        """The per-step values of the COMPLETE trials (and `n_complete`), up to date: one
        statement when no trial finished since the last call, two when some did."""
        with self._lock, get_engine(self.url).connect() as conn:
            if self._steps is None:
                cursor, steps = Cursor(self.study_id), StepValues()
                where = cursor.start(conn)
                self._read_steps(conn, where, steps)
                self._steps = (cursor, steps)
            cursor, steps = self._steps
            complete = [i for i, state in cursor.advance(conn) if state == TrialState.COMPLETE]
            if complete:
                self.n_complete += len(complete)
                rows = conn.execute(
                    select(_IV.step, _IV.intermediate_value, _IV.intermediate_value_type).where(
                        _IV.trial_id.in_(complete)
                    )
                )
                for step, value, kind in rows:
                    steps.add(step, _IV.stored_repr_to_intermediate_value(value, kind))
            return steps

    def bounded_trials(self, m: int, direction: StudyDirection) -> list[FrozenTrial]:
        """The recent and best `m` finished trials and the unfinished ones (GP reads the
        running trials), in number order, up to date with the database."""
        storage = get_storage(self.url)
        with self._lock:
            with get_engine(self.url).connect() as conn:
                if self._bounded is None or self._bounded[1].m != m:
                    cursor, bounded = Cursor(self.study_id), BoundedTrials(m, direction)
                    ids = self._bounded_ids(conn, cursor.start(conn), bounded)
                    if ids:
                        for t in get_trials_since(storage, self.study_id, ids, max(ids)):
                            if t._trial_id in ids:  # those above wait for `advance`
                                bounded.add(t)
                    self._bounded = (cursor, bounded)
                cursor, bounded = self._bounded
                finished = {i for i, _ in cursor.advance(conn)}
            wanted = finished | cursor.unfinished
            live = []
            if wanted:
                for t in get_trials_since(storage, self.study_id, wanted, max(wanted)):
                    if t._trial_id in finished:
                        bounded.add(t)
                    elif t._trial_id in cursor.unfinished and not t.state.is_finished():
                        live.append(t)
            return sorted(bounded.trials() + live, key=lambda t: t.number)

    def _read_steps(
        self, conn: Connection, where: list[ColumnElement[bool]], steps: StepValues
    ) -> None:
        self.n_complete = int(
            conn.scalar(
                select(func.count()).select_from(_T).where(*where, _T.state == TrialState.COMPLETE)
            )
            or 0
        )
        rows = conn.execute(
            select(_IV.step, _IV.intermediate_value, _IV.intermediate_value_type)
            .join(_T, _T.trial_id == _IV.trial_id)
            .where(*where, _T.state == TrialState.COMPLETE)
        )
        for step, value, kind in rows:
            steps.add(step, _IV.stored_repr_to_intermediate_value(value, kind))

    def _bounded_ids(
        self, conn: Connection, where: list[ColumnElement[bool]], b: BoundedTrials
    ) -> set[int]:
        recent = conn.scalars(
            select(_T.trial_id)
            .where(*where, _T.state.in_(SAMPLED))
            .order_by(_T.trial_id.desc())
            .limit(b.m)
        )
        ids = set(recent)
        finite = _V.value if b.sign > 0 else -_V.value
        best = conn.scalars(
            select(_T.trial_id)
            .join(_V, _V.trial_id == _T.trial_id)
            .where(*where, _T.state == TrialState.COMPLETE, _V.objective == 0)
            .order_by(
                # -inf first when minimizing, +inf first when maximizing; then finite values
                (_V.value_type != (_VType.INF_NEG if b.sign > 0 else _VType.INF_POS)),
                (_V.value_type != _VType.FINITE),
                finite,
            )
            .limit(b.m)
        )
        ids.update(best)
        return ids


@lru_cache(maxsize=64)
def history_for(url: str, study_id: int, study_name: str) -> StudyHistory:
    """The process's one `StudyHistory` of an Optuna study (`study_id`) in `url`. The name is
    part of the key: SQLite reuses the id of a deleted study that had the highest one."""
    return StudyHistory(url, study_id)
