"""The API of a study of N finished trials under 10 concurrent clients (issue 13 §3).

A real `hpo serve --workers 0` over a database holding a study of N trials (bulk-filled
through Optuna's schema and ours by bench/bulk_fill.py: params, values, service records,
stored findings; intermediate values and curve points for every 100th trial) and, as the
baseline of the same run, a study of 1,000. Ten client threads each send `--requests`
requests per endpoint; p50 and p99 per endpoint and study, and the ratio of the large
study's p99 to the small one's (1.0: flat).

Cold numbers come from a freshly started server (its per-process caches empty): the
dashboard's study page on first load (the page plus every API call it makes, in order),
then, on a second fresh server, the report's first answer and the history's first answer.

    .venv/bin/python bench/api_scale.py --trials 100000                       # SQLite
    .venv/bin/python bench/api_scale.py --trials 100000 \\
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres       # PostgreSQL

Goals (issue 13): p99 <= 250 ms for detail, best, a trials page at any offset and history;
report <= 2 s cold and <= 250 ms cached; the dashboard's study page data <= 3 s on first load.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bulk_fill import bulk_fill
from service.core.db.migrate import upgrade

CLIENTS = 10


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of `admin_url`, dropped afterwards."""
    name = f"hpo_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(url: str) -> Iterator[str]:
    """`hpo serve --workers 0` on a free port; its base URL once /api/health answers."""
    port = free_port()
    env = {**os.environ, "HPO_AUTH": "off", "HPO_LOG_LEVEL": "WARNING"}
    hpo = Path(sys.executable).parent / "hpo"
    proc = subprocess.Popen(
        [str(hpo), "serve", "--database-url", url, "--port", str(port), "--workers", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("hpo serve did not start")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def once(http: httpx.Client, path: str) -> float:
    t0 = time.perf_counter()
    got = http.get(path)
    took = time.perf_counter() - t0
    if got.status_code != 200:
        raise RuntimeError(f"{path}: {got.status_code} {got.text[:200]}")
    return took


def concurrent(base: str, path: str, requests: int) -> list[float]:
    """CLIENTS threads, each with its own connection, each sending `requests` GETs."""
    times: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with httpx.Client(base_url=base, timeout=300) as http:
                mine = [once(http, path) for _ in range(requests)]
            with lock:
                times.extend(mine)
        except BaseException as e:  # reported after the join
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def dashboard_calls(study_id: int) -> list[str]:
    """The study page's requests on first load, in the order study.js makes them."""
    return [
        f"/studies/{study_id}",
        "/api/dashboard/features",
        f"/api/studies/{study_id}",
        f"/api/studies/{study_id}/history",
        f"/api/studies/{study_id}/trials?limit=50&offset=0",
        f"/api/studies/{study_id}/importances",
        f"/api/studies/{study_id}/report",
        f"/api/studies/{study_id}/curves?max_points=100&top=50",
    ]


def timed_sequence(base: str, paths: list[str]) -> tuple[float, dict[str, float]]:
    each = {}
    with httpx.Client(base_url=base, timeout=600) as http:
        t0 = time.perf_counter()
        for p in paths:
            each[p] = once(http, p)
        return time.perf_counter() - t0, each


def run(url: str, n_trials: int, requests: int, say: Callable[[str], None]) -> None:
    upgrade(url)
    t0 = time.perf_counter()
    small = bulk_fill(url, "baseline-1k", 1000, seed=1)
    large = bulk_fill(url, f"large-{n_trials}", n_trials, seed=2)
    say(f"filled 1,000 + {n_trials:,} trials in {time.perf_counter() - t0:.0f} s")

    with serve(url) as base:  # fresh server: every cache cold
        total, each = timed_sequence(base, dashboard_calls(large))
        say(f"dashboard study page, first load (cold server): {total:.2f} s")
        for p, s in each.items():
            say(f"    {s * 1000:8.0f} ms  {p}")
    with serve(url) as base:
        cold_report = timed_sequence(base, [f"/api/studies/{large}/report"])[0]
        cold_history = timed_sequence(base, [f"/api/studies/{large}/history"])[0]
        say(f"report, first answer of a fresh server: {cold_report:.2f} s")
        say(f"history, first answer of a fresh server: {cold_history:.2f} s")

        def endpoints(sid: int, n: int) -> dict[str, str]:
            return {
                "study detail": f"/api/studies/{sid}",
                "best": f"/api/studies/{sid}/best",
                "trials page, offset 0": f"/api/studies/{sid}/trials?limit=50&offset=0",
                "trials page, middle": f"/api/studies/{sid}/trials?limit=50&offset={n // 2}",
                "trials page, end": f"/api/studies/{sid}/trials?limit=50&offset={n - 50}",
                "history": f"/api/studies/{sid}/history",
                "report (cached)": f"/api/studies/{sid}/report",
            }

        say(
            f"{CLIENTS} concurrent clients x {requests} requests each; "
            "p50 / p99 in ms (1k baseline | large) and p99 ratio"
        )
        say(
            f"| endpoint | 1k p50 | 1k p99 | {n_trials // 1000}k p50 | {n_trials // 1000}k p99 |"
            " p99 ratio |"
        )
        say("| --- | --- | --- | --- | --- | --- |")
        base_eps, large_eps = endpoints(small, 1000), endpoints(large, n_trials)
        for name in base_eps:
            for path in (base_eps[name], large_eps[name]):
                with httpx.Client(base_url=base, timeout=600) as http:
                    once(http, path)  # warm: the cached results are what is measured
            b = concurrent(base, base_eps[name], requests)
            g = concurrent(base, large_eps[name], requests)
            say(
                f"| {name} | {pct(b, 0.5) * 1000:.0f} | {pct(b, 0.99) * 1000:.0f} | "
                f"{pct(g, 0.5) * 1000:.0f} | {pct(g, 0.99) * 1000:.0f} | "
                f"{pct(g, 0.99) / pct(b, 0.99):.2f} |"
            )
        scrape = [once(httpx.Client(base_url=base, timeout=60), "/metrics") for _ in range(5)]
        say(
            f"/metrics scrape (median of 5, {n_trials + 1000:,} trial records): "
            f"{statistics.median(scrape) * 1000:.0f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=20, help="per client and endpoint")
    ap.add_argument("--postgres", help="admin URL of a PostgreSQL server (default: SQLite)")
    args = ap.parse_args()
    say = lambda line: print(line, flush=True)  # noqa: E731
    if args.postgres:
        with postgres_database(args.postgres) as url:
            say(f"PostgreSQL, {args.trials:,} trials")
            run(url, args.trials, args.requests, say)
    else:
        path = Path(tempfile.mkdtemp()) / "hpo.db"
        say(f"SQLite {path}, {args.trials:,} trials")
        run(f"sqlite:///{path}", args.trials, args.requests, say)


if __name__ == "__main__":
    main()
