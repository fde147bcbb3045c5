"""How long the study page of a large study takes to load: its HTML plus every API call the
page makes on first load, against a real uvicorn server on a SQLite file that holds one study
of N trials x E epochs (written straight into the tables, as workers would have left them).

Baseline, in the same process and database: the way the service answered before this
change — a study summary from Optuna's `get_all_trials` (which loads every trial with every
intermediate value) and the trial list paged through the old `GET .../trials`.

    .venv/bin/python bench/dashboard_load.py [--trials 5000] [--epochs 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import uvicorn
from optuna.distributions import CategoricalDistribution, FloatDistribution, distribution_to_json
from optuna.storages._rdb import models as om
from optuna.trial import TrialState
from sqlalchemy import insert

from service.app.main import create_app
from service.core.db.engine import session_scope
from service.core.db.migrate import upgrade
from service.core.db.models import CurvePoint, TrialRecord, utcnow
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.studies import service as study_service
from service.studies.spec import StudySpec
from service.trials import service as trial_service

SPACE = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
    "optimizer": CategoricalDistribution(["sgd", "momentum", "adam", "rmsprop"]),
}
CURVES = ("val_accuracy", "val_loss")
FINITE_STEP = om.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE


def fill(url: str, n_trials: int, epochs: int) -> int:
    spec = StudySpec.model_validate(
        {
            "name": "large",
            "dataset": {"name": "digits"},
            "objective": {"metric": "val_accuracy", "max_epochs": epochs},
            "space": {
                "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
                "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
                "optimizer": {"type": "categorical", "choices": list(SPACE["optimizer"].choices)},
            },
            "budget": {"n_trials": n_trials},
        }
    )
    with session_scope(url) as session:
        created = study_service.create_study(session, spec)
        optuna_id = study_service.get_study_row(session, created.id).optuna_study_id
    rng = random.Random(0)
    dist_json = {k: distribution_to_json(d) for k, d in SPACE.items()}
    start = utcnow()
    trials, values, params, inter, records, curves = [], [], [], [], [], []
    base_id = 1
    for n in range(n_trials):
        tid = base_id + n
        state = TrialState.PRUNED if rng.random() < 0.3 else TrialState.COMPLETE
        steps = epochs if state == TrialState.COMPLETE else rng.randint(1, epochs // 2)
        final = rng.uniform(0.5, 0.99)
        curve = [final * (1 - math.exp(-5 * s / epochs)) for s in range(1, steps + 1)]
        trials.append(
            {
                "trial_id": tid,
                "number": n,
                "study_id": optuna_id,
                "state": state,
                "datetime_start": start + timedelta(seconds=n),
                "datetime_complete": start + timedelta(seconds=n + 5),
            }
        )
        values.append(
            {
                "trial_id": tid,
                "objective": 0,
                "value": curve[-1],
                "value_type": om.TrialValueModel.TrialValueType.FINITE,
            }
        )
        for name, d in SPACE.items():
            external = (
                rng.choice(d.choices)
                if isinstance(d, CategoricalDistribution)
                else rng.uniform(d.low, d.high)
            )
            params.append(
                {
                    "trial_id": tid,
                    "param_name": name,
                    "param_value": d.to_internal_repr(external),
                    "distribution_json": dist_json[name],
                }
            )
        for s, v in enumerate(curve, 1):
            inter.append(
                {
                    "trial_id": tid,
                    "step": s,
                    "intermediate_value": v,
                    "intermediate_value_type": FINITE_STEP,
                }
            )
            for metric in CURVES:
                curves.append({"trial_id": tid, "step": s, "metric": metric, "value": v})
        records.append(
            {
                "study_id": created.id,
                "optuna_trial_id": tid,
                "number": n,
                "claim_index": n,
                "state": state.name.lower(),
                "started_at": start,
                "finished_at": start,
            }
        )
    with session_scope(url) as session:
        for model, rows in (
            (om.TrialModel, trials),
            (om.TrialValueModel, values),
            (om.TrialParamModel, params),
            (om.TrialIntermediateValueModel, inter),
            (TrialRecord, records),
            (CurvePoint, curves),
        ):
            for i in range(0, len(rows), 50_000):
                session.execute(insert(model), rows[i : i + 50_000])
    return created.id


CPU: list[float] = []


def timed(fn: object, repeat: int) -> float:
    """Median wall seconds; the median CPU seconds of this process (client and the server's
    thread: about the wall time on an idle machine) go to CPU."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()  # type: ignore[operator]
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    CPU.append(statistics.median(cpus))
    return statistics.median(walls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--database", help="reuse a SQLite file an earlier run filled (study 1)")
    args = ap.parse_args()

    if args.database:
        url, study_id = f"sqlite:///{args.database}", 1
    else:
        path = Path(tempfile.mkdtemp()) / "hpo.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        t0 = time.perf_counter()
        study_id = fill(url, args.trials, args.epochs)
        took = time.perf_counter() - t0
        print(f"filled {args.trials} trials x {args.epochs} epochs in {took:.0f} s: {path}")

    server = uvicorn.Server(
        uvicorn.Config(create_app(Settings(database_url=url)), port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)

    page_calls = [
        f"/studies/{study_id}",
        "/api/dashboard/features",
        f"/api/studies/{study_id}",
        f"/api/studies/{study_id}/history",
        f"/api/studies/{study_id}/curves?max_points=100&top=50",
        f"/api/studies/{study_id}/importances",
    ]
    sizes: dict[str, tuple[float, int]] = {}

    def load_page() -> None:
        for path in page_calls:
            t = time.perf_counter()
            r = http.get(path)
            r.raise_for_status()
            sizes[path] = (time.perf_counter() - t, len(r.content))

    cold = timed(load_page, 1)  # importances are computed once per number of complete trials
    cold_parts = dict(sizes)
    warm = timed(load_page, args.repeat)
    new_list = timed(lambda: http.get("/api/studies").raise_for_status(), args.repeat)
    cold_cpu, warm_cpu, list_cpu = CPU

    # The page also asks for the diagnosis report (issue 4) when the service has it, without
    # waiting for it to draw the charts; timed on its own.
    if http.get("/api/dashboard/features").json()["report"]:
        t = time.perf_counter()
        try:
            http.get(f"/api/studies/{study_id}/report", timeout=300).raise_for_status()
            print(f"GET /api/studies/{study_id}/report: {time.perf_counter() - t:.1f} s")
        except httpx.TimeoutException:
            print(f"GET /api/studies/{study_id}/report: over 300 s (timed out)")

    # Baseline: each of these reads the whole study through Optuna's get_all_trials, so
    # one run of each is enough; the page would need the summary and every trial page.
    def old_summary() -> None:
        with session_scope(url) as session:
            study = study_service.get_study_row(session, study_id)
        get_storage(url).get_all_trials(study.optuna_study_id, deepcopy=False)

    old_list = timed(old_summary, 1)

    def old_trial_page() -> None:
        with session_scope(url) as session:
            trial_service.list_trials(session, study_id, 1000, 0)

    old_page = timed(old_trial_page, 1)
    n_pages = math.ceil(args.trials / 1000)
    old = old_list + n_pages * old_page
    old_cpu = CPU[3] + n_pages * CPU[4]

    print(
        json.dumps(
            {k: {"seconds": round(v[0], 3), "bytes": v[1]} for k, v in cold_parts.items()},
            indent=1,
        )
    )
    print("                                               wall s   cpu s (≈ wall when idle)")
    calls = len(page_calls) - 1
    print(f"study page, first load (HTML + {calls} API calls): {cold:6.2f}  {cold_cpu:6.2f}")
    print(f"study page, again (importances cached):        {warm:6.2f}  {warm_cpu:6.2f}")
    print(f"baseline: summary + {n_pages} trial pages of 1000:     {old:6.2f}  {old_cpu:6.2f}")
    print(f"  ratio baseline / first load: {old / cold:.1f}x wall, {old_cpu / cold_cpu:.1f}x cpu")
    print(f"GET /api/studies:       {new_list:6.3f}  {list_cpu:6.3f}")
    print(f"baseline summary:       {old_list:6.3f}  {CPU[3]:6.3f}")
    print(f"  ratio: {old_list / new_list:.0f}x wall, {CPU[3] / list_cpu:.0f}x cpu")
    server.should_exit = True
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
