"""Per-process caches of study-level results, checked against the database on every read.

A history, a best trial or a report of a large study costs aggregate SQL over all its
trials; ten dashboards polling it would pay that ten times a second. What they show changes
only when a trial changes state, so each result is kept with the study's `version`: Optuna's
trial counts by state plus the number of our finished trial records (whose errors and
findings arrive with them), two indexed aggregate counts. A read whose version matches is
served from memory; any state change anywhere (another API process, a worker) changes the
version, so a service process never serves a result staler than its last count. Service
processes stay stateless: a cold cache only costs one recomputation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.db.engine import database_url
from service.core.db.models import Study, TrialRecord
from service.core.states import TrialState
from service.studies.queries import trial_counts
from service.studies.schemas import TrialCounts

V = TypeVar("V")
Version = tuple[int, ...]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def study_version(session: Session, study: Study, counts: TrialCounts | None = None) -> Version:
    """Optuna's trial counts by state (`counts`, if the caller has them) and our finished
    records: changes whenever a trial starts, ends or is retried. Two statements over
    indexes."""
    if counts is None:
        counts = trial_counts(session, [study.optuna_study_id])[study.optuna_study_id]
    finished = session.scalar(
        select(func.count())
        .select_from(TrialRecord)
        .where(TrialRecord.study_id == study.id, TrialRecord.state.in_(FINISHED))
    )
    return (*counts.model_dump().values(), int(finished or 0))


class VersionedCache(Generic[V]):
    """An LRU of `maxsize` results, each valid for one version of its key."""

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, tuple[Version, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Version) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != version:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: Hashable, version: Version, value: V) -> None:
        with self._lock:
            self._items[key] = (version, value)
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def cached(
    cache: VersionedCache[V],
    session: Session,
    study: Study,
    compute: Callable[[], V],
    version: Version | None = None,
    name: str = "",
) -> V:
    """`compute()`, or the result kept for this study at this version."""
    version = study_version(session, study) if version is None else version
    key = (database_url(session), study.id, name)
    found = cache.get(key, version)
    if found is None:
        found = compute()
        cache.put(key, version, found)
    return found
