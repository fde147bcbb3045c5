"""Every study endpoint answers from a bounded number of indexed statements, however many
trials the study holds (issue 13 §2), and /metrics stays bounded too (issue 16 §9).

Proved by counting, never by timing: a listener on every engine counts the statements an
endpoint issues and, for each SELECT, the rows it returns (the same statement wrapped in a
COUNT, on the same connection), for a study of 50 and one of 1,000 bulk-written trials. The
sampling thresholds are lowered for the test (a history past 100 trials is downsampled,
importances read 50 trials), so "bounded" is visible at N = 1,000 already. Then: a trials
page at any offset returns the rows the old full-scan path returned, and the downsampled
history keeps the best-so-far curve exact.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from optuna.trial import TrialState
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine

from bench.bulk_fill import bulk_fill
from service.analysis import charts, report
from service.app.metrics import DatabaseCollector
from service.core.db.engine import session_scope
from service.core.db.models import TrialRecord, Worker
from service.core.optuna_compat import trial_id_of
from service.core.optuna_storage import get_storage
from service.scheduling.workers import heartbeat, register_worker
from service.studies import samples
from service.studies import service as study_service
from service.studies.queries import study_history
from service.trials import service as trial_service
from service.trials.schemas import TrialPage
from service.worker.device_stats import device_sample
from tests.conftest import unique

SMALL, LARGE = 50, 1000


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampling thresholds of a 100,000-trial study, scaled to a 1,000-trial one."""
    monkeypatch.setattr(samples, "HISTORY_MAX_POINTS", 100)
    monkeypatch.setattr(samples, "HISTORY_SAMPLE", 50)
    monkeypatch.setattr(samples, "MAX_IMPROVEMENTS", 50)
    monkeypatch.setattr(samples, "SAMPLE_TRIALS", 50)


def clear_caches() -> None:
    """Every per-process cache of study results: each request below takes its cold path."""
    charts._histories.clear()
    report._reports.clear()
    study_service._best_ids.clear()
    with charts._importance_lock:
        charts._importance_cache.clear()


@dataclass
class Counted:
    statements: int = 0
    rows: list[int] = field(default_factory=list)  # rows returned by each SELECT
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def counted() -> Iterator[Counted]:
    """Statements and rows of every engine in this process (the in-process server's too)."""
    seen = Counted()

    def after(
        conn: Any, cursor: Any, statement: str, parameters: Any, ctx: Any, many: bool
    ) -> None:
        rows = None
        if statement.lstrip().upper().startswith("SELECT") and not many:
            probe = conn.connection.cursor()
            try:
                probe.execute(f"SELECT count(*) FROM ({statement}) AS counted", parameters)
                rows = int(probe.fetchone()[0])
            finally:
                probe.close()
        with seen.lock:
            seen.statements += 1
            if rows is not None:
                seen.rows.append(rows)

    event.listen(Engine, "after_cursor_execute", after)
    yield seen
    event.remove(Engine, "after_cursor_execute", after)


@pytest.fixture(scope="module")
def studies(database_url: str) -> dict[int, int]:
    """{N: study id} for a study of SMALL and one of LARGE bulk-written trials."""
    return {n: bulk_fill(database_url, unique(f"n{n}"), n, curve_every=10) for n in (SMALL, LARGE)}


ENDPOINTS = [
    "/api/studies/{id}",
    "/api/studies/{id}/best",
    "/api/studies/{id}/trials?limit=50",
    "/api/studies/{id}/trials?limit=50&offset={mid}",
    "/api/studies/{id}/trials?limit=50&offset={end}",
    "/api/studies/{id}/trials?limit=20&offset={mid}&state=complete",
    "/api/studies/{id}/history",
    "/api/studies/{id}/importances",
    "/api/studies/{id}/report",
    "/api/studies/{id}/curves?top=20",
    "/metrics",
]


def measure(client: httpx.Client, counted: Counted, path: str) -> tuple[int, int]:
    clear_caches()
    with counted.lock:
        counted.statements, counted.rows = 0, []
    got = client.get(path)
    assert got.status_code == 200, (path, got.text)
    with counted.lock:
        return counted.statements, sum(counted.rows)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoints_issue_bounded_statements_and_rows(
    client: httpx.Client, counted: Counted, studies: dict[int, int], endpoint: str
) -> None:
    cost = {}
    for n, study_id in studies.items():
        path = endpoint.format(id=study_id, mid=n // 2, end=n - 10)
        measure(client, counted, path)  # first calls import and compile; not counted
        cost[n] = measure(client, counted, path)
    (small_statements, _), (large_statements, large_rows) = cost[SMALL], cost[LARGE]
    # The same statements whatever the size (a sampled history or report adds a couple).
    assert large_statements <= small_statements + 3, cost
    # Rows: a page, a sample (~50 trials x 6 rows: the trial and its 5 params) or
    # aggregates; reading the study would be at least 6 rows per trial.
    assert large_rows < LARGE, cost


def test_the_dashboards_first_load_is_as_cheap_at_1000_trials_as_at_50(
    client: httpx.Client, counted: Counted, studies: dict[int, int]
) -> None:
    """The study page's calls on first load, together: the same statements, and rows that
    do not grow with the study (a full read of 1,000 trials alone is 6,000 rows)."""
    cost = {}
    for n, study_id in studies.items():
        calls = [
            f"/api/studies/{study_id}",
            f"/api/studies/{study_id}/history",
            f"/api/studies/{study_id}/trials?limit=50",
            f"/api/studies/{study_id}/curves?max_points=100&top=50",
            f"/api/studies/{study_id}/importances",
            f"/api/studies/{study_id}/report",
        ]
        clear_caches()
        with counted.lock:
            counted.statements, counted.rows = 0, []
        for path in calls:
            assert client.get(path).status_code == 200
        with counted.lock:
            cost[n] = (counted.statements, sum(counted.rows))
    assert cost[LARGE][0] <= cost[SMALL][0] + 6, cost
    assert cost[LARGE][1] <= 1.5 * cost[SMALL][1] + 300, cost


def old_list_trials(
    url: str, study_id: int, limit: int, offset: int, state: str | None
) -> TrialPage:
    """The trials page as it was before issue 13: every trial through Optuna, sorted and
    sliced in Python."""
    with session_scope(url) as session:
        study = study_service.get_study_row(session, study_id)
        trials = get_storage(url).get_all_trials(study.optuna_study_id, deepcopy=False)
        if state is not None:
            trials = [t for t in trials if t.state.name.lower() == state]
        trials = sorted(trials, key=lambda t: t.number)
        records = study_service.trial_records(session, study_id)
        retries = {r.retry_of: tid for tid, r in records.items() if r.retry_of is not None}
        return TrialPage(
            total=len(trials),
            limit=limit,
            offset=offset,
            items=[
                trial_service.summarize_trial(
                    t, study_id, records.get(trial_id_of(t)), retries.get(trial_id_of(t))
                )
                for t in trials[offset : offset + limit]
            ],
        )


def test_trials_pages_equal_the_old_full_scan(database_url: str) -> None:
    study_id = bulk_fill(database_url, unique("pages"), 300, running=3)
    with session_scope(database_url) as session:
        failed = session.scalars(
            select(TrialRecord.optuna_trial_id)
            .where(TrialRecord.study_id == study_id, TrialRecord.state == "fail")
            .order_by(TrialRecord.id)
        ).all()
        later = session.scalars(
            select(TrialRecord.id)
            .where(TrialRecord.study_id == study_id, TrialRecord.state == "complete")
            .order_by(TrialRecord.id.desc())
            .limit(len(failed))
        ).all()
        for record_id, original in zip(later, failed, strict=False):  # re-runs of the failures
            session.execute(
                update(TrialRecord).where(TrialRecord.id == record_id).values(retry_of=original)
            )
    cases = [(50, 0, None), (7, 3, None), (50, 150, None), (50, 290, None), (50, 300, None)]
    cases += [(1000, 0, None), (20, 5, "complete"), (20, 0, "fail"), (5, 0, "running")]
    cases += [(10, 1000, "pruned"), (100, 60, "pruned")]
    for limit, offset, state in cases:
        with session_scope(database_url) as session:
            new = trial_service.list_trials(session, study_id, limit, offset, state)
        old = old_list_trials(database_url, study_id, limit, offset, state)
        assert new.model_dump() == old.model_dump(), (limit, offset, state)
    assert any(
        t.retried_by is not None
        for t in old_list_trials(database_url, study_id, 300, 0, "fail").items
    )


def best_so_far(numbers: list[int], values: list[float | None], maximize: bool) -> dict[int, float]:
    """{trial number: best value up to it} over the complete trials with a value."""
    out, best = {}, None
    for n, v in zip(numbers, values, strict=True):
        if v is not None:
            best = v if best is None else max(best, v) if maximize else min(best, v)
        if best is not None:
            out[n] = best
    return out


@pytest.mark.parametrize("metric", ["val_accuracy", "val_loss"])  # maximize, minimize
def test_downsampled_history_keeps_the_best_so_far_curve_exact(
    client: httpx.Client, database_url: str, metric: str
) -> None:
    study_id = bulk_fill(database_url, unique("hist"), LARGE, metric=metric, seed=3)
    clear_caches()
    got = client.get(f"/api/studies/{study_id}/history").json()
    assert got["downsampled"] and got["total"] == LARGE
    assert got["count"] == len(got["number"]) < 50 + 50 + 2
    with session_scope(database_url) as session:
        full = study_history(session, study_service.get_study_row(session, study_id))
    maximize = got["direction"] == "maximize"
    want = best_so_far(full.number, full.value, maximize)
    shown = best_so_far(got["number"], got["value"], maximize)
    # At every trial the curve drawn from the kept points equals the full history's.
    for n in full.number:
        kept = [k for k in got["number"] if k <= n]
        if n in want:
            assert kept and shown[max(kept)] == want[n], n
    assert got["number"][-1] == LARGE - 1  # the last trial is always there
    # The kept trials' columns equal the full history's.
    at = {n: i for i, n in enumerate(full.number)}
    for k, n in enumerate(got["number"]):
        i = at[n]
        assert (got["trial_id"][k], got["state"][k], got["value"][k]) == (
            full.trial_id[i],
            full.state[i],
            full.value[i],
        )
        assert {p: col[k] for p, col in got["params"].items()} == {
            p: col[i] for p, col in full.params.items()
        }


def test_a_small_history_is_whole(client: httpx.Client, database_url: str) -> None:
    study_id = bulk_fill(database_url, unique("whole"), 60)
    got = client.get(f"/api/studies/{study_id}/history").json()
    assert not got["downsampled"] and got["count"] == got["total"] == 60


def value_of(text: str, series: str) -> float:
    """The sample of `series` (name{labels}) in a scrape."""
    (line,) = [x for x in text.splitlines() if x.startswith(series + " ")]
    return float(line.split()[-1])


def scrape(url: str, max_studies: int = 20) -> str:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(url, 60.0, max_studies=max_studies))
    return generate_latest(registry).decode()


def test_metrics_cap_the_study_series_and_sum_the_rest(database_url: str) -> None:
    ids = [bulk_fill(database_url, unique("cap"), 20, running=1, seed=k) for k in range(3)]
    text = scrape(database_url, max_studies=1)
    newest = max(ids)  # running studies, newest first: only it keeps its own label
    study_labels = {
        line.split('study="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("hpo_trials{")
    }
    assert study_labels == {str(newest), "other"}
    with session_scope(database_url) as session:
        n_running = sum(
            1
            for s in session.scalars(select(TrialRecord.state)).all()
            if s == TrialState.RUNNING.name.lower()
        )
    assert value_of(text, 'hpo_trials{state="running",study="other"}') == n_running - 1


def test_metrics_histogram_is_counted_by_the_database(database_url: str) -> None:
    bulk_fill(database_url, unique("hist-metrics"), 40)
    with session_scope(database_url) as session:
        rows = session.execute(
            select(TrialRecord.state, TrialRecord.started_at, TrialRecord.finished_at).where(
                TrialRecord.finished_at.is_not(None)
            )
        ).all()
    text = scrape(database_url)
    for state in {r.state for r in rows}:
        seconds = [(r.finished_at - r.started_at).total_seconds() for r in rows if r.state == state]
        name = "hpo_trial_duration_seconds"
        assert value_of(text, f'{name}_count{{state="{state}"}}') == len(seconds)
        for bound in (5, 15):
            below = sum(1 for s in seconds if s <= bound)
            assert value_of(text, f'{name}_bucket{{le="{bound}",state="{state}"}}') == below
        total = value_of(text, f'{name}_sum{{state="{state}"}}')
        assert abs(total - sum(seconds)) < 1e-3 * len(seconds)


def test_device_gauges_on_cpu_are_absent_and_reported_ones_are_served(database_url: str) -> None:
    assert device_sample("cpu") == {}  # on CPU: nothing to report, no error
    cpu = register_worker(database_url, device="cpu", gpu_name=None, gpu_memory_mb=None)
    heartbeat(database_url, cpu, device_sample("cpu"))
    text = scrape(database_url)
    assert f'worker="{cpu}"' not in text
    assert "hpo_worker_device_memory_used_bytes" in text  # the family, with no sample
    # A CUDA worker's heartbeat (values as `device_sample` reads them) reaches the gauges.
    gpu = register_worker(database_url, device="cuda:0", gpu_name="H200", gpu_memory_mb=1000)
    heartbeat(database_url, gpu, {"gpu_memory_used_mb": 250, "gpu_utilization": 40.0})
    with session_scope(database_url) as session:
        row = session.get(Worker, gpu)
        assert row is not None and row.gpu_memory_used_mb == 250
    text = scrape(database_url)
    labels = f'device="cuda:0",worker="{gpu}"'
    assert value_of(text, f"hpo_worker_device_memory_used_bytes{{{labels}}}") == 250 * 2**20
    assert value_of(text, f"hpo_worker_device_memory_total_bytes{{{labels}}}") == 1000 * 2**20
    assert value_of(text, f"hpo_worker_device_utilization_ratio{{{labels}}}") == 0.4
