"""The REST API over a real server and database, with a real worker training in-process."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from service.core.settings import Settings
from service.worker.process import WorkerProcess
from tests.conftest import DIGITS_SPEC, tiny_spec, unique

CURVES = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr", "epoch_seconds")


def run_worker(settings: Settings) -> None:
    """Train until no running study has budget left."""
    WorkerProcess(settings).run(until_idle=True, install_signals=False)


def submit(client: httpx.Client, spec: dict[str, Any]) -> int:
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_health(client: httpx.Client) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["database"] == "ok"


def test_create_returns_id_name_status_and_duplicate_is_409(client: httpx.Client) -> None:
    name = unique("dup")
    response = client.post("/api/studies", json=tiny_spec(name))
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "status", "warnings"}
    assert body["warnings"] == []
    assert body["name"] == name
    assert body["status"] == "running"

    again = client.post("/api/studies", json=tiny_spec(name))
    assert again.status_code == 409
    assert name in again.json()["detail"]
    listed = [s for s in client.get("/api/studies").json() if s["name"] == name]
    assert len(listed) == 1


def test_unknown_ids_are_404(client: httpx.Client) -> None:
    assert client.get("/api/studies/999999").status_code == 404
    assert client.get("/api/studies/999999/trials").status_code == 404
    assert client.get("/api/studies/999999/best").status_code == 404
    assert client.post("/api/studies/999999/stop").status_code == 404
    assert client.get("/api/trials/999999").status_code == 404


def test_best_is_404_until_a_trial_completes(client: httpx.Client) -> None:
    study_id = submit(client, tiny_spec(unique("nobest")))
    response = client.get(f"/api/studies/{study_id}/best")
    assert response.status_code == 404
    assert "no completed trial" in response.json()["detail"]


def test_study_trains_to_completion_with_curves_and_best(
    client: httpx.Client, settings: Settings
) -> None:
    spec = tiny_spec(unique("trained"), n_trials=3)
    spec["objective"]["max_epochs"] = 3
    study_id = submit(client, spec)

    run_worker(settings)

    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed"
    assert study["counts"]["complete"] == 3
    assert study["spec"]["name"] == spec["name"]
    assert study["best"]["value"] == study["best_value"]

    page = client.get(f"/api/studies/{study_id}/trials").json()
    assert page["total"] == 3
    assert [t["number"] for t in page["items"]] == [0, 1, 2]
    values = []
    for item in page["items"]:
        assert item["state"] == "complete"
        assert set(item["params"]) == {"lr", "batch_size"}
        assert item["duration_seconds"] > 0
        assert item["error"] is None
        trial = client.get(f"/api/trials/{item['trial_id']}").json()
        for metric in CURVES:
            assert [step for step, _ in trial["curves"][metric]] == [1, 2, 3], metric
        # The objective is the last epoch's validation accuracy.
        assert trial["value"] == pytest.approx(trial["curves"]["val_accuracy"][-1][1])
        assert trial["curves"]["lr"][0][1] == pytest.approx(item["params"]["lr"])
        assert 0.0 <= trial["test_accuracy"] <= 1.0
        values.append(trial["value"])

    best = client.get(f"/api/studies/{study_id}/best").json()
    assert best["value"] == max(values)
    assert best["config"] == {**spec["fixed"], **best["params"]}
    assert 0.0 <= best["test_accuracy"] <= 1.0


def test_pagination(client: httpx.Client, settings: Settings) -> None:
    study_id = submit(client, tiny_spec(unique("pages"), n_trials=5))
    run_worker(settings)
    first = client.get(f"/api/studies/{study_id}/trials", params={"limit": 2}).json()
    rest = client.get(f"/api/studies/{study_id}/trials", params={"limit": 10, "offset": 2}).json()
    assert first["total"] == rest["total"] == 5
    assert [t["number"] for t in first["items"]] == [0, 1]
    assert [t["number"] for t in rest["items"]] == [2, 3, 4]
    complete = client.get(f"/api/studies/{study_id}/trials", params={"state": "complete"})
    assert complete.json()["total"] == 5
    assert (
        client.get(f"/api/studies/{study_id}/trials", params={"state": "bogus"}).status_code == 422
    )


def test_stop_prevents_new_trials(client: httpx.Client, settings: Settings) -> None:
    study_id = submit(client, tiny_spec(unique("stopped"), n_trials=5))
    response = client.post(f"/api/studies/{study_id}/stop")
    assert response.status_code == 200
    assert response.json()["status"] == "stopped"
    run_worker(settings)
    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "stopped"
    assert client.get(f"/api/studies/{study_id}/trials").json()["total"] == 0
    # Stopping is idempotent and never reopens a study.
    assert client.post(f"/api/studies/{study_id}/stop").json()["status"] == "stopped"


def test_failing_trial_is_fail_with_error_and_worker_goes_on(
    client: httpx.Client, settings: Settings
) -> None:
    # Nesterov without momentum is refused by PyTorch when the optimizer is built.
    bad = tiny_spec(
        unique("failing"),
        n_trials=1,
        fixed={"optimizer": "nesterov", "momentum": 0.0, "hidden_layers": 1},
        budget={"n_trials": 1, "max_failed_trials": 1},
    )
    good = tiny_spec(unique("after-fail"), n_trials=1)
    bad_id = submit(client, bad)
    good_id = submit(client, good)

    run_worker(settings)

    failed = client.get(f"/api/studies/{bad_id}").json()
    assert failed["status"] == "failed"
    assert failed["counts"]["fail"] == 2
    assert "more than 1" in failed["error"]
    trials = client.get(f"/api/studies/{bad_id}/trials").json()["items"]
    assert all(t["state"] == "fail" for t in trials)
    assert all("Nesterov" in t["error"] for t in trials)
    trial = client.get(f"/api/trials/{trials[0]['trial_id']}").json()
    assert "Nesterov" in trial["error"]
    # The same worker went on to train the other study.
    assert client.get(f"/api/studies/{good_id}").json()["status"] == "completed"


def test_enqueued_configurations_run_first_and_once(
    client: httpx.Client, settings: Settings
) -> None:
    spec = tiny_spec(unique("enqueue"), n_trials=4)
    spec["enqueue"] = [{"lr": 0.05, "batch_size": 16}, {"lr": 0.002}]
    study_id = submit(client, spec)
    run_worker(settings)
    items = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert len(items) == 4
    assert items[0]["params"] == {"lr": 0.05, "batch_size": 16}
    assert items[1]["params"]["lr"] == 0.002
    assert items[1]["params"]["batch_size"] in (16, 32)
    assert sum(1 for t in items if t["params"]["lr"] == 0.05) == 1


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes", "gp", "qmc"])
def test_every_sampler_runs(client: httpx.Client, settings: Settings, sampler: str) -> None:
    spec = tiny_spec(unique(f"sampler-{sampler}"), n_trials=3)
    spec["sampler"] = {"name": sampler, "seed": 3}
    spec["space"] = {
        "lr": {"type": "float", "low": 0.01, "high": 0.1, "step": 0.01},
        "hidden_units": {"type": "int", "low": 4, "high": 16, "step": 4},
    }
    spec["fixed"] = {"hidden_layers": 1}
    study_id = submit(client, spec)
    run_worker(settings)
    study = client.get(f"/api/studies/{study_id}").json()
    assert study["counts"]["complete"] == 3, study
    items = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    for t in items:
        assert 0.01 <= t["params"]["lr"] <= 0.1
        assert t["params"]["hidden_units"] in (4, 8, 12, 16)


@pytest.mark.parametrize(
    "pruner",
    [
        {"name": "median", "n_startup_trials": 1},
        {"name": "percentile", "percentile": 50, "n_startup_trials": 1},
        {"name": "successive_halving"},
        {"name": "hyperband"},
        {"name": "none"},
    ],
)
def test_every_pruner_runs(
    client: httpx.Client, settings: Settings, pruner: dict[str, Any]
) -> None:
    spec = tiny_spec(unique(f"pruner-{pruner['name']}"), n_trials=4)
    spec["pruner"] = pruner
    spec["objective"]["max_epochs"] = 4
    study_id = submit(client, spec)
    run_worker(settings)
    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed"
    assert study["counts"]["complete"] + study["counts"]["pruned"] == 4
    for t in client.get(f"/api/studies/{study_id}/trials").json()["items"]:
        trial = client.get(f"/api/trials/{t['trial_id']}").json()
        # A pruned trial stops early; every epoch it ran has its curve points.
        n_epochs = len(trial["curves"]["val_loss"])
        assert len(trial["intermediate_values"]) == n_epochs
        if t["state"] == "complete":
            assert n_epochs == 4
        else:
            assert t["state"] == "pruned"
            assert 1 <= n_epochs <= 4


def test_digits_spec_from_issue_round_trips(client: httpx.Client) -> None:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = unique("roundtrip")
    study_id = submit(client, spec)
    stored = client.get(f"/api/studies/{study_id}").json()["spec"]
    # Stored normalized: what was given, plus the defaults (log, step) made explicit.
    assert stored["space"].keys() == spec["space"].keys()
    for name, dist in spec["space"].items():
        assert stored["space"][name] | dist == stored["space"][name]
    assert stored["fixed"] == spec["fixed"]
    assert stored["budget"]["n_trials"] == 6
    client.post(f"/api/studies/{study_id}/stop")
