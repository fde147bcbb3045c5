"""The dashboard shows a regression study where it shows a classification one (issue 15 §5):
its task, R² where accuracy is charted, RMSE/MAE in the target's units, and the test
metrics; in headless chromium with no console error (the `tab` fixture refuses any)."""

from __future__ import annotations

from typing import Any

import pytest

from tests import test_dashboard_browser as dash
from tests.test_dashboard_browser import Tab
from tests.test_e2e import Service

# The browser tests' fixtures: one chromium, the shared `hpo serve`, a tab refusing errors.
browser = dash.browser
service = dash.service
tab = dash.tab

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def regression(service: Service) -> dict[str, Any]:
    """A finished diabetes study: 2 trials x 4 epochs."""
    spec = {
        "name": "dash-diabetes",
        "dataset": {"name": "diabetes", "seed": 2},
        "objective": {"max_epochs": 4},
        "space": {"lr": {"type": "categorical", "choices": [0.01, 0.03]}},
        "fixed": {"hidden_layers": 1, "hidden_units": 8},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 2},
    }
    created = service.client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text
    study = service.wait_finished(created.json()["id"])
    return {"study": study, "trials": service.trials(study["id"])}


def _facts(tab: Tab) -> dict[str, str]:
    names = tab.page.locator("#summary dt").all_text_contents()
    values = tab.page.locator("#summary dd").all_text_contents()
    return dict(zip(names, values, strict=True))


def test_regression_pages_show_the_task_and_its_metrics(
    tab: Tab, regression: dict[str, Any], service: Service
) -> None:
    study, (a, b) = regression["study"], regression["trials"]
    tab.open(f"/studies/{study['id']}")
    facts = _facts(tab)
    assert facts["task"] == "regression"
    assert "best val_rmse" in facts

    tab.open(f"/trials/{a['trial_id']}")
    assert tab.js("document.getElementById('h-accuracy').textContent") == "R²"
    assert tab.js("document.getElementById('chart-accuracy').data.length") == 1
    assert tab.points("chart-accuracy") == 4
    assert tab.page.locator("#target-error").is_visible()
    assert tab.js("document.getElementById('chart-error').data.length") == 2
    assert tab.points("chart-error", 1) == 4
    tested = service.client.get(f"/api/trials/{a['trial_id']}").json()["test_metrics"]
    facts = _facts(tab)
    assert {"test R²", "test RMSE", "test MAE"} <= set(facts)
    assert "test accuracy" not in facts
    assert float(facts["test RMSE"]) == pytest.approx(tested["test_rmse"], rel=1e-2)
    tab.shot("trial-regression")

    tab.open(f"/compare?trials={a['trial_id']},{b['trial_id']}")
    assert tab.js("document.getElementById('chart-val-accuracy').layout.yaxis.title.text") == (
        "val_r2"
    )
    assert tab.points("chart-val-accuracy", 1) == 4
    rows = tab.page.locator("#side tbody th").all_text_contents()
    assert "test R²" in rows and "test accuracy" not in rows
