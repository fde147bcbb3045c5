"""Per-process caches of study-level results, checked against the database on every read.

A history, a best trial, the counts or a report of a large study cost aggregate SQL over all
its trials; ten dashboards polling it would pay that ten times a second. What they show
changes only when a trial is created or changes state, so each result is kept with the
study's `version` (`study_version`: the study row's claim/finish counters and the last trial
number, read by index). A read whose version matches is served from memory; a claim or a
finish anywhere (another API process, a worker) changes the version, so a service process
never serves a result older than the study's last change. Service processes stay stateless:
a cold cache only costs one recomputation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.db.engine import database_url
from service.core.db.models import Study
from service.core.optuna_compat import rdb_models as om
from service.studies.queries import trial_counts
from service.studies.schemas import TrialCounts

V = TypeVar("V")
Version = tuple[int, ...]


def study_version(session: Session, study: Study) -> Version:
    """Changes whenever a trial of the study is created or changes state: the study row's
    counters, which every claim and every finish updates in its own transaction (`n_claims`
    only grows and every finish moves `n_running`, so no sequence of claims and finishes
    leaves them as they were), its status and `updated_at`, and the largest trial number in
    Optuna's table (trials written by other means than a claim: imports, tests). One
    statement by index, O(log N)."""
    last = session.scalar(
        select(func.max(om.TrialModel.number)).where(
            om.TrialModel.study_id == study.optuna_study_id
        )
    )
    return (
        study.n_claims,
        study.n_running,
        study.n_failed,
        study.slots_used,
        hash(study.status),
        hash(study.updated_at),
        -1 if last is None else int(last),
    )


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


_counts: VersionedCache[TrialCounts] = VersionedCache(maxsize=256)


def cached_counts(session: Session, study: Study, version: Version) -> TrialCounts:
    """The study's trial counts by state (an aggregate over its trials), kept per version."""
    return cached(
        _counts,
        session,
        study,
        lambda: trial_counts(session, [study.optuna_study_id])[study.optuna_study_id],
        version,
        "counts",
    )
