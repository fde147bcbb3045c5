"""The dashboard's data endpoints and pages over HTTP, on SQLite and PostgreSQL: summaries from
aggregate SQL agree with Optuna's own view, histories, downsampled curves, importances."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import optuna
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from sqlalchemy import insert, update

from service.analysis.downsample import lttb
from service.app.dashboard import pages as dashboard_pages
from service.app.main import create_app
from service.core.db.engine import session_scope
from service.core.db.models import CurvePoint, TrialRecord
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.studies import service as study_service
from service.studies.spec import StudySpec
from tests.conftest import free_port, tiny_spec, unique

DISTS = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "optimizer": CategoricalDistribution(["sgd", "adam"]),
}


def fill_study(
    url: str, name: str, plan: list[tuple[TrialState, float | None]], epochs: int = 5
) -> tuple[int, list[int]]:
    """A study whose trials are written through Optuna's public API (no workers): each
    planned (state, value) becomes one trial with params, intermediate values, a service
    record and curve points."""
    spec = StudySpec.model_validate(tiny_spec(name, n_trials=len(plan)))
    with session_scope(url) as session:
        study_id = study_service.create_study(session, spec).id
    study = optuna.load_study(study_name=f"hpo:{name}", storage=get_storage(url))
    rng = random.Random(name)
    trial_ids = []
    for k, (state, value) in enumerate(plan):
        n_steps = epochs if state == TrialState.COMPLETE else 2
        curve = [(step, rng.random()) for step in range(1, n_steps + 1)]
        params = {"lr": 10 ** rng.uniform(-4, -1), "optimizer": rng.choice(["sgd", "adam"])}
        frozen = create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params=params if state != TrialState.RUNNING else {},
            distributions=DISTS if state != TrialState.RUNNING else {},
            intermediate_values=dict(curve) if state != TrialState.RUNNING else {},
        )
        study.add_trial(frozen)
        trial = study.get_trials(deepcopy=False)[-1]
        trial_ids.append(trial._trial_id)
        with session_scope(url) as session:
            session.add(
                TrialRecord(
                    study_id=study_id,
                    optuna_trial_id=trial._trial_id,
                    number=trial.number,
                    claim_index=k,
                    state=state.name.lower(),
                    error="ValueError: boom" if state == TrialState.FAIL else None,
                )
            )
            for metric in ("val_accuracy", "val_loss"):
                session.execute(
                    insert(CurvePoint),
                    [
                        {"trial_id": trial._trial_id, "step": s, "metric": metric, "value": v}
                        for s, v in curve
                    ],
                )
    return study_id, trial_ids


PLAN = [
    (TrialState.COMPLETE, 0.7),
    (TrialState.COMPLETE, 0.9),
    (TrialState.PRUNED, None),
    (TrialState.FAIL, None),
    (TrialState.COMPLETE, 0.9),  # a tie: the earlier trial is the best
    (TrialState.COMPLETE, float("inf")),  # not finite: never the best
    (TrialState.COMPLETE, 0.8),
    (TrialState.RUNNING, None),
]


def reference_summary(url: str, optuna_study_id: int) -> tuple[dict[str, int], float | None, int]:
    """Counts and best trial the way Optuna's own API sees them."""
    trials = get_storage(url).get_all_trials(optuna_study_id)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    done = [t for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]  # type: ignore[arg-type]
    best = max(done, key=lambda t: t.value)  # type: ignore[arg-type, return-value]
    return counts, best.value, best._trial_id


def test_summaries_match_optuna(client: httpx.Client, database_url: str) -> None:
    name = unique("agg")
    study_id, trial_ids = fill_study(database_url, name, PLAN)
    with session_scope(database_url) as session:
        optuna_id = study_service.get_study_row(session, study_id).optuna_study_id
    counts, best_value, best_trial = reference_summary(database_url, optuna_id)

    listed = {s["name"]: s for s in client.get("/api/studies", params={"limit": 1000}).json()}
    detail = client.get(f"/api/studies/{study_id}").json()
    for summary in (listed[name], detail):
        assert {k: v for k, v in summary["counts"].items() if v} == counts
        assert summary["best_value"] == best_value == 0.9
    assert detail["best"]["trial_id"] == best_trial == trial_ids[1]
    assert client.get(f"/api/studies/{study_id}/best").json()["trial_id"] == trial_ids[1]


def test_minimize_best_is_the_smallest(client: httpx.Client, database_url: str) -> None:
    name = unique("min")
    spec = tiny_spec(name, objective={"metric": "val_loss", "max_epochs": 2})
    study_id = client.post("/api/studies", json=spec).json()["id"]
    study = optuna.load_study(study_name=f"hpo:{name}", storage=get_storage(database_url))
    for v in (0.5, 0.2, 0.9):
        study.add_trial(create_trial(value=v))
    assert client.get(f"/api/studies/{study_id}").json()["best_value"] == 0.2


def test_history_lists_every_trial_with_reasons(client: httpx.Client, database_url: str) -> None:
    study_id, trial_ids = fill_study(database_url, unique("hist"), PLAN)
    h = client.get(f"/api/studies/{study_id}/history").json()
    trials = client.get(f"/api/studies/{study_id}/trials", params={"limit": 1000}).json()["items"]

    assert h["count"] == len(PLAN) == len(trials)
    assert h["trial_id"] == trial_ids == [t["trial_id"] for t in trials]
    assert h["state"] == [t["state"] for t in trials]
    # The same values as the trials endpoint, except a non-finite one (JSON has no inf).
    assert h["value"] == [0.7, 0.9, None, None, 0.9, None, 0.8, None]
    for k, t in enumerate(trials):
        for p, column in h["params"].items():
            assert column[k] == t["params"].get(p)
    assert set(h["params"]) == {"lr", "optimizer"}
    assert h["reason"][2].startswith("pruned after epoch 2 (val_accuracy ")
    assert h["last_step"][2] == 2
    assert h["reason"][3] == "ValueError: boom"
    assert h["reason"][0] is None


def test_curves_are_downsampled_on_the_server(client: httpx.Client, database_url: str) -> None:
    study_id, trial_ids = fill_study(
        database_url, unique("curves"), [(TrialState.COMPLETE, 0.5)], epochs=100
    )
    full = client.get(f"/api/trials/{trial_ids[0]}").json()["curves"]["val_accuracy"]
    got = client.get(f"/api/trials/{trial_ids[0]}/curves", params={"max_points": 10}).json()
    assert got["n_points"] == {"val_accuracy": 100, "val_loss": 100}
    points = got["curves"]["val_accuracy"]
    assert len(points) == 10
    assert points[0] == full[0] and points[-1] == full[-1]
    assert all(p in full for p in points)

    one = client.get(
        f"/api/trials/{trial_ids[0]}/curves", params={"metric": "val_loss", "max_points": 1000}
    ).json()
    assert list(one["curves"]) == ["val_loss"] and len(one["curves"]["val_loss"]) == 100

    study = client.get(f"/api/studies/{study_id}/curves", params={"max_points": 20}).json()
    assert study["metric"] == "val_accuracy"
    assert [(t["trial_id"], t["n_points"], len(t["points"])) for t in study["trials"]] == [
        (trial_ids[0], 100, 20)
    ]


def test_study_curves_of_a_large_study_pick_the_best(
    client: httpx.Client, database_url: str
) -> None:
    plan = [(TrialState.COMPLETE, v / 10) for v in range(6)] + [(TrialState.RUNNING, None)]
    study_id, trial_ids = fill_study(database_url, unique("top"), plan)
    got = client.get(f"/api/studies/{study_id}/curves", params={"top": 2}).json()
    # The two best complete trials (values 0.5, 0.4) and the running one.
    assert [t["trial_id"] for t in got["trials"]] == [trial_ids[4], trial_ids[5], trial_ids[6]]
    assert got["total"] == 7


def test_importances_rank_the_param_that_matters(client: httpx.Client, database_url: str) -> None:
    name = unique("imp")
    study_id = client.post("/api/studies", json=tiny_spec(name)).json()["id"]
    assert client.get(f"/api/studies/{study_id}/importances").json()["importances"] == {}
    study = optuna.load_study(study_name=f"hpo:{name}", storage=get_storage(database_url))
    rng = random.Random(0)
    for _ in range(30):
        lr, opt = 10 ** rng.uniform(-4, -1), rng.choice(["sgd", "adam"])
        value = -((math.log10(lr) + 2.5) ** 2) + 0.01 * (opt == "adam")
        study.add_trial(
            create_trial(params={"lr": lr, "optimizer": opt}, distributions=DISTS, value=value)
        )
    got = client.get(f"/api/studies/{study_id}/importances").json()
    assert got["n_complete"] == 30
    assert set(got["importances"]) == {"lr", "optimizer"}
    assert got["importances"]["lr"] > 0.8
    assert math.isclose(sum(got["importances"].values()), 1.0, rel_tol=1e-6)


def test_unknown_ids_are_404(client: httpx.Client) -> None:
    for path in (
        "/api/studies/999999/history",
        "/api/studies/999999/curves",
        "/api/studies/999999/importances",
        "/api/trials/999999/curves",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "not found" in r.json()["detail"]
    r = client.get("/api/trials/1/curves", params={"max_points": 2})
    assert r.status_code == 422 and "max_points" in r.text


def test_non_finite_values_reach_the_charts_as_null(
    client: httpx.Client, database_url: str
) -> None:
    """Issue 12: values of inf, -inf, 1e30 (and NaN where the database stores it: PostgreSQL;
    SQLite turns NaN into NULL) in curves and trial values are served as JSON (non-finite as
    null), through downsampling, by every chart endpoint."""
    plan = [
        (TrialState.COMPLETE, 0.5),
        (TrialState.COMPLETE, math.inf),
        (TrialState.COMPLETE, 1e30),
    ]
    study_id, trial_ids = fill_study(database_url, unique("nonfinite"), plan, epochs=100)
    odd = {40: math.inf, 60: -math.inf, 80: 1e30}
    if database_url.startswith("postgresql"):
        odd[90] = math.nan
    with session_scope(database_url) as session:
        for step, value in odd.items():
            session.execute(
                update(CurvePoint)
                .where(CurvePoint.trial_id == trial_ids[0], CurvePoint.step == step)
                .values(value=value)
            )
    got = client.get(f"/api/trials/{trial_ids[0]}/curves", params={"max_points": 20})
    assert got.status_code == 200, got.text
    points = dict(got.json()["curves"]["val_loss"])
    assert {s: points.get(s, "dropped") for s in odd} == {
        s: 1e30 if v == 1e30 else None for s, v in odd.items()
    }
    study = client.get(f"/api/studies/{study_id}/curves", params={"max_points": 20})
    assert study.status_code == 200, study.text
    assert None in [v for _, v in study.json()["trials"][0]["points"]]
    history = client.get(f"/api/studies/{study_id}/history").json()
    assert history["value"] == [0.5, None, 1e30]
    assert client.get(f"/api/studies/{study_id}/importances").status_code == 200


def test_lttb_keeps_ends_count_and_spikes() -> None:
    points = [(i, math.sin(i / 5)) for i in range(500)]
    points[250] = (250, 40.0)
    down = lttb(points, 50)
    assert len(down) == 50
    assert down[0] == points[0] and down[-1] == points[-1]
    assert (250, 40.0) in down
    assert [p[0] for p in down] == sorted({p[0] for p in down})
    assert lttb(points[:10], 50) == points[:10]


def test_lttb_keeps_where_a_curve_stops_being_finite() -> None:
    """Issue 12: a diverged curve's non-finite points mark where it diverged; they represent
    their buckets, and NaN or inf neighbours do not blind the triangles of the others."""
    points = [(i, 2.5 - i / 1000) for i in range(1, 301)]
    points[150] = (151, math.inf)
    points[200] = (201, math.nan)
    points[250] = (251, 1e30)
    down = lttb(points, 30)
    assert len(down) == 30 and down[0] == points[0] and down[-1] == points[-1]
    assert (151, math.inf) in down and (251, 1e30) in down
    assert any(x == 201 and math.isnan(y) for x, y in down)
    tail = [(i, math.nan if i > 10 else 1.0) for i in range(1, 101)]  # diverged at epoch 11
    assert [x for x, _ in lttb(tail, 5)] == [1, 11, 34, 67, 100]  # first NaN of each bucket


@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=32),
            st.sampled_from([1e30, -1e30]),
        ),
        min_size=3,
        max_size=200,
    ),
    st.integers(min_value=3, max_value=50),
)
def test_lttb_on_any_values(values: list[float], n: int) -> None:
    points = list(enumerate(values))
    down = lttb(points, n)
    assert len(down) == min(n, len(points))
    assert down[0] == points[0] and down[-1] == points[-1]
    xs = [x for x, _ in down]
    assert xs == sorted(set(xs))
    if not all(math.isfinite(v) for v in values[1:-1]) and len(points) > n:
        assert not all(math.isfinite(y) for _, y in down)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def mounted_url(settings: Settings) -> Iterator[str]:
    """The app mounted under /hpo in a parent app, as behind a path-prefix proxy."""
    parent = FastAPI()
    parent.mount("/hpo", create_app(settings))
    with serving(parent) as url:
        yield url + "/hpo"


def test_pages_and_assets_under_a_path_prefix(mounted_url: str) -> None:
    with httpx.Client(timeout=30) as http:
        page = http.get(f"{mounted_url}/studies/1")
        assert page.status_code == 200
        assert '<meta name="hpo-root" content="/hpo">' in page.text
        assert 'src="/hpo/assets/study.js"' in page.text
        assert "<script>" not in page.text and "style=" not in page.text  # CSP: files only
        js = http.get(f"{mounted_url}/assets/plotly.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert len(js.content) > 1_000_000
        assert http.get(f"{mounted_url}/assets/study.js").status_code == 200
        features = http.get(f"{mounted_url}/api/dashboard/features").json()
        assert set(features) == {"diagnosis", "report", "model", "workers"}


def test_features_follow_the_routes_the_app_has(settings: Settings) -> None:
    """The service has every optional API the pages use (its routers nest routers); an app
    without them says so, and the pages hide those parts."""
    with serving(create_app(settings)) as url:
        assert httpx.get(f"{url}/api/dashboard/features").json() == {
            "diagnosis": True,
            "report": True,
            "model": True,
            "workers": True,
        }
    bare = FastAPI()
    dashboard_pages.install(bare)
    with serving(bare) as url:
        before = httpx.get(f"{url}/api/dashboard/features").json()
    assert before == {"diagnosis": False, "report": False, "model": False, "workers": False}

    @bare.get("/api/workers")
    def workers() -> list[dict[str, Any]]:
        return []

    with serving(bare) as url:
        assert httpx.get(f"{url}/api/dashboard/features").json() == {**before, "workers": True}
