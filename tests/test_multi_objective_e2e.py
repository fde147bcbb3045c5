"""Multi-objective studies end to end (issue 15 §2): `hpo serve` with a real worker on
SQLite and PostgreSQL trains a two-objective study (val_accuracy vs n_params) on digits with
NSGA-II and a three-objective one (adding inference_ms) through REST; the Pareto front holds
at least 3 trials, none dominating another, and every trial off it is dominated by one on it;
headless chromium draws both fronts and the histories per objective without a console
error."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unique
from tests.test_e2e import Service

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

# Widths 4..128 give models of 310 to 9,610 parameters; a few epochs of Adam sort their
# accuracies the same way, so the front holds several widths. The enqueued widths make that
# true whatever NSGA-II draws; the rest of the budget is NSGA-II's (population 4: a second
# generation is bred within the budget).
DIGITS_TWO_OBJECTIVES: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "objective": {"max_epochs": 4},
    "objectives": [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "n_params", "direction": "minimize"},
    ],
    "space": {"hidden_units": {"type": "categorical", "choices": [4, 8, 16, 32, 64, 128]}},
    "fixed": {"hidden_layers": 1, "lr": 0.01, "optimizer": "adam", "batch_size": 32},
    "sampler": {"name": "nsga2", "seed": 0, "population_size": 4},
    "budget": {"n_trials": 8},
    "enqueue": [{"hidden_units": 4}, {"hidden_units": 16}, {"hidden_units": 128}],
}

MOONS_THREE_OBJECTIVES: dict[str, Any] = {
    "dataset": {"name": "moons", "n_samples": 200, "noise": 0.2},
    "objective": {"max_epochs": 3},
    "objectives": [
        {"metric": "val_accuracy"},
        {"metric": "n_params"},
        {"metric": "inference_ms"},
    ],
    "space": {"hidden_units": {"type": "categorical", "choices": [2, 4, 16, 64]}},
    "fixed": {"hidden_layers": 1, "lr": 0.05, "optimizer": "adam"},
    "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 2},
    "budget": {"n_trials": 4},
}


def dominates(a: list[float], b: list[float], maximize: list[bool]) -> bool:
    better_or_equal = all(
        (x >= y) if m else (x <= y) for x, y, m in zip(a, b, maximize, strict=True)
    )
    return better_or_equal and a != b


@pytest.fixture(scope="module")
def service(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One `hpo serve` with one worker on this module's database, and both studies run."""
    svc = Service(tmp_path_factory.mktemp("multiobj"), workers=1, db_url=database_url)
    try:
        ids = {}
        for key, spec in (("two", DIGITS_TWO_OBJECTIVES), ("three", MOONS_THREE_OBJECTIVES)):
            response = svc.client.post("/api/studies", json={"name": unique(key), **spec})
            assert response.status_code == 201, response.text
            ids[key] = response.json()["id"]
        studies = {key: svc.wait_finished(sid, timeout=600) for key, sid in ids.items()}
        yield {"svc": svc, "studies": studies}
    finally:
        assert svc.stop() == 0, svc.log()


def test_nsga2_on_digits_finds_a_front_of_at_least_three_non_dominated_trials(
    service: dict[str, Any],
) -> None:
    svc, study = service["svc"], service["studies"]["two"]
    assert study["status"] == "completed", (study, svc.log())
    trials = svc.trials(study["id"])
    assert [t["state"] for t in trials] == ["complete"] * 8, trials
    front = svc.client.get(f"/api/studies/{study['id']}/pareto").json()
    maximize = [o["direction"] == "maximize" for o in front["objectives"]]
    assert maximize == [True, False]
    values = [t["values"] for t in front["trials"]]
    assert len(values) >= 3, (front, trials)
    for a, b in itertools.permutations(values, 2):
        assert not dominates(a, b, maximize), (a, b)
    for t in trials:
        if t["trial_id"] not in {f["trial_id"] for f in front["trials"]}:
            assert any(dominates(v, t["values"], maximize) for v in values), t
    # n_params is the model's real size: 64 inputs -> width -> 10 classes
    for t in trials:
        width = t["params"]["hidden_units"]
        assert t["values"][1] == 64 * width + width + width * 10 + 10, t
    assert 0.5 < max(v[0] for v in values) <= 1.0
    best = svc.client.get(f"/api/studies/{study['id']}/best")
    assert best.status_code == 409 and "/pareto" in best.json()["detail"]
    # no pruning, but the curves are still written, every epoch
    detail = svc.client.get(f"/api/trials/{trials[0]['trial_id']}").json()
    assert detail["intermediate_values"] == {}
    assert detail["values"] == trials[0]["values"] and detail["value"] is None
    assert [s for s, _ in detail["curves"]["val_accuracy"]] == [1, 2, 3, 4]


def test_three_objectives_measure_inference_time_on_the_device(service: dict[str, Any]) -> None:
    svc, study = service["svc"], service["studies"]["three"]
    assert study["status"] == "completed", (study, svc.log())
    trials = svc.trials(study["id"])
    assert all(t["state"] == "complete" and len(t["values"]) == 3 for t in trials), trials
    assert all(t["values"][2] > 0 for t in trials)
    front = svc.client.get(f"/api/studies/{study['id']}/pareto").json()
    assert [o["metric"] for o in front["objectives"]] == [
        "val_accuracy",
        "n_params",
        "inference_ms",
    ]
    assert len(front["trials"]) >= 1


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
def test_the_dashboard_draws_both_fronts_without_console_errors(
    service: dict[str, Any],
) -> None:
    from playwright.sync_api import sync_playwright

    svc = service["svc"]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        for key, pairs in (("two", 1), ("three", 3)):
            study = service["studies"][key]
            n_objectives = 2 if key == "two" else 3
            front = svc.client.get(f"/api/studies/{study['id']}/pareto").json()
            page.goto(f"{svc.url}/studies/{study['id']}")
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            assert page.is_visible("#pareto")
            data = page.evaluate(
                "document.getElementById('chart-pareto').data"
                ".map(t => ({name: t.name, n: t.x.length, xaxis: t.xaxis || 'x'}))"
            )
            on_front = [t for t in data if t["name"] == "Pareto front"]
            dominated = [t for t in data if t["name"] == "dominated"]
            assert len(on_front) == pairs and len(dominated) == pairs, data
            assert all(t["n"] == len(front["trials"]) for t in on_front), (data, front)
            n = len(svc.trials(study["id"]))
            assert all(t["n"] + d["n"] == n for t, d in zip(on_front, dominated, strict=True)), data
            # plotly really drew the points (SVG), and one history panel per objective
            assert page.evaluate("document.querySelectorAll('#chart-pareto .point').length") >= n
            panels = page.evaluate(
                "new Set(document.getElementById('chart-history').data.map(t => t.yaxis)).size"
            )
            assert panels == n_objectives
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"dashboard-pareto-{key}.png"), full_page=True)
        browser.close()
    assert errors == [], errors
