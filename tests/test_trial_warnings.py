"""Warnings about a trial's configuration are stored with it and returned by the API."""

from __future__ import annotations

import httpx

from service.core.settings import Settings
from service.worker.process import WorkerProcess
from tests.conftest import tiny_spec, unique


def test_a_trial_keeps_the_warnings_about_its_configuration(
    client: httpx.Client, settings: Settings
) -> None:
    spec = tiny_spec(unique("warned"), n_trials=2)
    spec["space"]["init"] = {"type": "categorical", "choices": ["zeros", "he_normal"]}
    spec["enqueue"] = [{"init": "zeros"}, {"init": "he_normal"}]
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text

    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    items = client.get(f"/api/studies/{response.json()['id']}/trials").json()["items"]
    by_init = {
        t["params"]["init"]: client.get(f"/api/trials/{t['trial_id']}").json() for t in items
    }
    assert by_init.keys() == {"zeros", "he_normal"}
    (warning,) = by_init["zeros"]["warnings"]
    assert "init=zeros" in warning and "symmetry" in warning
    assert by_init["he_normal"]["warnings"] == []
