"""Prometheus metrics read from the database at scrape time.

Every service process answers the same numbers (the state lives in the database, not in
the process), so any one of several API replicas can be scraped.

Series of one study carry its id (`study="12"`); its name, which may say more than an
operator wants a monitoring system to store, is added as `study_name` only with
`HPO_METRICS_STUDY_NAMES=true`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from prometheus_client import start_http_server
from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from service.core.db.engine import session_scope
from service.core.db.models import EnqueuedConfig, Study, TrialRecord, Worker, utcnow
from service.core.settings import Settings
from service.core.states import StudyState, WorkerState

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the trial-duration histogram's buckets.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


class DatabaseCollector(Collector):
    """Reads the service's tables at each scrape; `study_names` adds the `study_name` label."""

    def __init__(self, url: str, grace_seconds: float, study_names: bool = False) -> None:
        self.url = url
        self.grace_seconds = grace_seconds
        self.study_labels = ["study", "study_name"] if study_names else ["study"]

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

    def _collect(self) -> Iterator[Metric]:
        with session_scope(self.url) as session:
            by_state = session.execute(
                select(Study.id, Study.name, TrialRecord.state, func.count())
                .select_from(TrialRecord)
                .join(Study, Study.id == TrialRecord.study_id)
                .group_by(Study.id, Study.name, TrialRecord.state)
            ).all()
            studies = session.execute(
                select(
                    Study.id,
                    Study.name,
                    Study.status,
                    Study.n_trials,
                    Study.slots_used,
                    Study.n_running,
                )
            ).all()
            workers = session.execute(select(Worker.status, Worker.heartbeat_at)).all()
            durations = session.execute(
                select(TrialRecord.state, TrialRecord.started_at, TrialRecord.finished_at).where(
                    TrialRecord.finished_at.is_not(None)
                )
            ).all()
            enqueued = session.execute(
                select(Study.id, Study.name, func.count())
                .select_from(EnqueuedConfig)
                .join(Study, Study.id == EnqueuedConfig.study_id)
                .where(EnqueuedConfig.claimed.is_(False), Study.status == StudyState.RUNNING)
                .group_by(Study.id, Study.name)
            ).all()

        trials = GaugeMetricFamily(
            "hpo_trials",
            "Trials by study and state (claimed, running, complete, pruned, fail)",
            labels=[*self.study_labels, "state"],
        )
        for study_id, name, state, n in by_state:
            trials.add_metric([*self._study(study_id, name), state], n)
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
        for study_id, name, st, n_trials, used, n_running in studies:
            if st == StudyState.RUNNING:
                queue.add_metric(self._study(study_id, name), max(n_trials - used, 0))
            running.add_metric(self._study(study_id, name), n_running)
        yield queue
        yield running
        pending = GaugeMetricFamily(
            "hpo_enqueued_pending",
            "Enqueued configurations (and retries) not yet claimed",
            labels=self.study_labels,
        )
        for study_id, name, n in enqueued:
            pending.add_metric(self._study(study_id, name), n)
        yield pending

        cutoff = utcnow() - timedelta(seconds=self.grace_seconds)
        alive = sum(1 for st, beat in workers if st == WorkerState.RUNNING and beat >= cutoff)
        w = GaugeMetricFamily("hpo_workers_alive", "Workers with a heartbeat in the grace period")
        w.add_metric([], alive)
        yield w
        yield _count_by_status(
            "hpo_workers", "Worker processes by status as recorded", (w[0] for w in workers)
        )

        hist = HistogramMetricFamily(
            "hpo_trial_duration_seconds",
            "Wall time of finished trials, claim to finish",
            labels=["state"],
        )
        per_state: dict[str, list[float]] = {}
        for state, started, finished in durations:
            if finished is not None:
                per_state.setdefault(state, []).append((finished - started).total_seconds())
        for state, values in sorted(per_state.items()):
            buckets = [
                (f"{bound:g}", float(sum(1 for v in values if v <= bound)))
                for bound in DURATION_BUCKETS
            ]
            buckets.append(("+Inf", float(len(values))))
            hist.add_metric([state], buckets, sum_value=sum(values))
        yield hist


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
            settings.database_url, settings.worker_grace_seconds, settings.metrics_study_names
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
