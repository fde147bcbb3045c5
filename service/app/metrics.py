"""Prometheus metrics read from the database at scrape time.

Every service process answers the same numbers (the state lives in the database, not in
the process), so any one of several API replicas can be scraped.

Series of one study carry its id (`study="12"`); its name, which may say more than an
operator wants a monitoring system to store, is added as `study_name` only with
`HPO_METRICS_STUDY_NAMES=true`. At most `HPO_METRICS_MAX_STUDIES` studies (default 20:
running ones first, newest first) get series of their own; the others are summed into
`study="other"`, so the number of series stays bounded however many studies accumulate.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import case, extract, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import EnqueuedConfig, Study, TrialRecord, Worker, utcnow
from service.core.settings import Settings
from service.core.states import StudyState, WorkerState

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the trial-duration histogram's buckets.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


OTHER = "other"  # the label of the studies summed together past the cap


def _duration_seconds(dialect: str) -> Any:
    """Seconds from a trial record's claim to its finish, computed by the database."""
    started, finished = TrialRecord.started_at, TrialRecord.finished_at
    if dialect == "sqlite":
        # Julian days as doubles carry ~20 us of error: rounded to the millisecond, a trial
        # of exactly 5 s falls in the le="5" bucket, as Python's subtraction puts it.
        return func.round((func.julianday(finished) - func.julianday(started)) * 86400.0, 3)
    return extract("epoch", finished - started)


class DatabaseCollector(Collector):
    """Reads the service's tables at each scrape; `study_names` adds the `study_name` label.

    A scrape costs a fixed number of aggregate statements: nothing per trial comes back to
    Python (trial counts are one GROUP BY over the records' (study, state) index; the
    duration histogram is summed in the database for the studies that changed since the
    last scrape only, see `_durations`), and the per-study series are capped: the
    `max_studies` running studies with the highest ids, then the most recently created
    others, get their own `study` label; the rest are summed into `study="other"`. Worker
    device gauges come from each live worker's heartbeat row.
    """

    def __init__(
        self, url: str, grace_seconds: float, study_names: bool = False, max_studies: int = 20
    ) -> None:
        self.url = url
        self.grace_seconds = grace_seconds
        self.study_labels = ["study", "study_name"] if study_names else ["study"]
        self.max_studies = max_studies

    def _study(self, study_id: int, name: str) -> list[str]:
        """The label values of one study's series."""
        return [str(study_id), name][: len(self.study_labels)]

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hpo_database_up", "1 if the database answered this scrape")
        try:
            metrics = list(self._collect())
        except SQLAlchemyError as e:
            log.warning("metrics: database unavailable (%s)", type(e).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _labels_of(self, studies: Sequence[Any]) -> dict[int, tuple[str, ...]]:
        """Each study's label values: its own for the first `max_studies` (running ones,
        newest first, then the others, newest first), "other" for the rest."""
        ranked = sorted(studies, key=lambda s: (s.status != StudyState.RUNNING, -s.id))
        other = tuple([OTHER] * len(self.study_labels))
        return {
            s.id: tuple(self._study(s.id, s.name)) if k < self.max_studies else other
            for k, s in enumerate(ranked)
        }

    def _collect(self) -> Iterator[Metric]:
        cutoff = utcnow() - timedelta(seconds=self.grace_seconds)
        with session_scope(self.url) as session:
            dialect = session.get_bind().dialect.name
            studies = session.execute(
                select(
                    Study.id,
                    Study.name,
                    Study.status,
                    Study.n_trials,
                    Study.slots_used,
                    Study.n_running,
                    Study.n_claims,
                    Study.n_failed,
                    Study.updated_at,
                )
            ).all()
            by_state = session.execute(
                select(TrialRecord.study_id, TrialRecord.state, func.count()).group_by(
                    TrialRecord.study_id, TrialRecord.state
                )
            ).all()
            workers_by_status = session.execute(
                select(Worker.status, func.count()).group_by(Worker.status)
            ).all()
            live = session.execute(
                select(
                    Worker.id,
                    Worker.device,
                    Worker.gpu_memory_mb,
                    Worker.gpu_memory_used_mb,
                    Worker.gpu_utilization,
                ).where(Worker.status == WorkerState.RUNNING, Worker.heartbeat_at >= cutoff)
            ).all()
            durations = _durations(session, dialect, self.url, studies)
            enqueued = session.execute(
                select(EnqueuedConfig.study_id, func.count())
                .join(Study, Study.id == EnqueuedConfig.study_id)
                .where(EnqueuedConfig.claimed.is_(False), Study.status == StudyState.RUNNING)
                .group_by(EnqueuedConfig.study_id)
            ).all()

        labels = self._labels_of(studies)
        trials = GaugeMetricFamily(
            "hpo_trials",
            "Trials by study and state (claimed, running, complete, pruned, fail)",
            labels=[*self.study_labels, "state"],
        )
        per_state: Counter[tuple[str, ...]] = Counter()
        for study_id, state, n in by_state:
            if study_id in labels:
                per_state[(*labels[study_id], state)] += n
        for key, n in sorted(per_state.items()):
            trials.add_metric(list(key), n)
        yield trials

        yield _count_by_status("hpo_studies", "Studies by status", (s.status for s in studies))

        queue = GaugeMetricFamily(
            "hpo_queue_depth",
            "Trials of running studies not yet started (budget left to claim)",
            labels=self.study_labels,
        )
        running = GaugeMetricFamily(
            "hpo_trials_running", "Trials claimed and not finished", labels=self.study_labels
        )
        depth: Counter[tuple[str, ...]] = Counter()
        in_flight: Counter[tuple[str, ...]] = Counter()
        for study_id, _, st, n_trials, used, n_running, *_ in studies:
            if st == StudyState.RUNNING:
                depth[labels[study_id]] += max(n_trials - used, 0)
            in_flight[labels[study_id]] += n_running
        for key, n in sorted(depth.items()):
            queue.add_metric(list(key), n)
        for key, n in sorted(in_flight.items()):
            running.add_metric(list(key), n)
        yield queue
        yield running
        pending = GaugeMetricFamily(
            "hpo_enqueued_pending",
            "Enqueued configurations (and retries) not yet claimed",
            labels=self.study_labels,
        )
        waiting: Counter[tuple[str, ...]] = Counter()
        for study_id, n in enqueued:
            waiting[labels[study_id]] += n
        for key, n in sorted(waiting.items()):
            pending.add_metric(list(key), n)
        yield pending

        w = GaugeMetricFamily("hpo_workers_alive", "Workers with a heartbeat in the grace period")
        w.add_metric([], len(live))
        yield w
        statuses = GaugeMetricFamily(
            "hpo_workers", "Worker processes by status as recorded", labels=["status"]
        )
        for status, n in sorted(workers_by_status):
            statuses.add_metric([status], n)
        yield statuses
        yield from _device_gauges(live)

        hist = HistogramMetricFamily(
            "hpo_trial_duration_seconds",
            "Wall time of finished trials, claim to finish",
            labels=["state"],
        )
        for state, (n, total, below) in sorted(durations.items()):
            buckets = [
                (f"{bound:g}", float(c)) for bound, c in zip(DURATION_BUCKETS, below, strict=True)
            ]
            buckets.append(("+Inf", float(n)))
            hist.add_metric([state], buckets, sum_value=total)
        yield hist


# Per database and study: (the study row's counters, {state: (count, sum of seconds, count
# at or below each bucket bound)}) of its finished trial records.
Durations = dict[str, tuple[int, float, list[int]]]
_durations_of: dict[tuple[str, int], tuple[tuple[Any, ...], Durations]] = {}
_durations_lock = threading.Lock()


def _durations(session: Session, dialect: str, url: str, studies: Sequence[Any]) -> Durations:
    """The duration histogram of every finished trial record, by state. Kept per study
    with the study row's counters (`n_claims`, `n_running`, `n_failed`, `slots_used`,
    `updated_at`), which the transaction that finishes a record changes with it: a scrape
    recomputes, as one aggregate statement in the database, only the studies that changed
    since the previous scrape, so its cost follows what happened since, not how many
    trials ever finished."""
    versions = {
        s.id: (s.n_claims, s.n_running, s.n_failed, s.slots_used, s.updated_at) for s in studies
    }
    with _durations_lock:
        known = {sid: item for (u, sid), item in _durations_of.items() if u == url}
    changed = [sid for sid, v in versions.items() if sid not in known or known[sid][0] != v]
    fresh: dict[int, Durations] = {sid: {} for sid in changed}
    seconds = _duration_seconds(dialect)
    for k in range(0, len(changed), 500):
        for study_id, state, n, total, *below in session.execute(
            select(
                TrialRecord.study_id,
                TrialRecord.state,
                func.count(),
                func.sum(seconds),
                *(func.sum(case((seconds <= b, 1), else_=0)) for b in DURATION_BUCKETS),
            )
            .where(
                TrialRecord.study_id.in_(changed[k : k + 500]),
                TrialRecord.finished_at.is_not(None),
            )
            .group_by(TrialRecord.study_id, TrialRecord.state)
        ):
            fresh[study_id][state] = (int(n), float(total or 0.0), [int(c or 0) for c in below])
    with _durations_lock:
        for sid in [sid for (u, sid) in _durations_of if u == url and sid not in versions]:
            del _durations_of[(url, sid)]  # a deleted study
        for sid, per_state in fresh.items():
            _durations_of[(url, sid)] = (versions[sid], per_state)
        per_study = [per_state for (u, _), (_, per_state) in _durations_of.items() if u == url]
    out: Durations = {}
    for per_state in per_study:
        for state, (n, total, below) in per_state.items():
            n0, total0, below0 = out.get(state, (0, 0.0, [0] * len(DURATION_BUCKETS)))
            out[state] = (
                n0 + n,
                total0 + total,
                [a + b for a, b in zip(below0, below, strict=True)],
            )
    return out


def _device_gauges(live: Sequence[Any]) -> Iterator[Metric]:
    """Device memory and utilization of each live worker that reported them (CUDA workers;
    utilization needs NVML). One series per live worker: bounded by the fleet."""
    labels = ["worker", "device"]
    used = GaugeMetricFamily(
        "hpo_worker_device_memory_used_bytes", "Device memory in use", labels=labels
    )
    total = GaugeMetricFamily(
        "hpo_worker_device_memory_total_bytes", "Device memory of the device", labels=labels
    )
    util = GaugeMetricFamily(
        "hpo_worker_device_utilization_ratio",
        "Device utilization (0..1) over NVML's last sample period",
        labels=labels,
    )
    for worker_id, device, total_mb, used_mb, utilization in live:
        key = [str(worker_id), str(device)]
        if used_mb is not None:
            used.add_metric(key, used_mb * 2**20)
        if total_mb is not None and used_mb is not None:
            total.add_metric(key, total_mb * 2**20)
        if utilization is not None:
            util.add_metric(key, utilization / 100.0)
    yield used
    yield total
    yield util


def _count_by_status(name: str, documentation: str, statuses: Iterable[str]) -> Metric:
    """A gauge of how many rows have each status, one sample a status."""
    gauge = GaugeMetricFamily(name, documentation, labels=["status"])
    for status, n in sorted(Counter(statuses).items()):
        gauge.add_metric([status], n)
    return gauge


def registry_for(settings: Settings) -> CollectorRegistry:
    """A registry whose one collector reads the database of `settings` at each scrape."""
    registry = CollectorRegistry()
    registry.register(
        DatabaseCollector(
            settings.database_url,
            settings.worker_grace_seconds,
            settings.metrics_study_names,
            settings.metrics_max_studies,
        )
    )
    return registry


@contextmanager
def separate_listener(settings: Settings) -> Iterator[None]:
    """Serves the metrics, without a token, on `HPO_METRICS_BIND` (host:port) while the
    context is open; does nothing when that is unset. Raises OSError if the address cannot
    be bound."""
    if settings.metrics_bind is None:
        yield
        return
    host, _, port = settings.metrics_bind.rpartition(":")
    server, thread = start_http_server(int(port), host.strip("[]"), registry_for(settings))
    log.info("metrics: also served without a token on http://%s/metrics", settings.metrics_bind)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
