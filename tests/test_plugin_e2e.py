"""The example plug-in (examples/plugins/residual_mlp), installed by pip as a real
distribution with its `hpo.models` entry point (into a --target folder on the PYTHONPATH of
the spawned service and workers, so this venv is not changed), trains through REST with a
real worker: gradient telemetry per parameter group, a diagnosis, a saved model that
rebuilds through the entry point, and a second study that starts from its weights."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import TrialDiagnosis
from tests.conftest import tiny_spec, unique
from tests.test_e2e import Service
from trainer.checkpoint import Checkpoint, load_checkpoint, rebuild_model

pytestmark = pytest.mark.slow

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "residual_mlp"
GROUPS = ["stem", "blocks.0.fc1", "blocks.0.fc2", "head"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install --target` of the plug-in: its package and its dist-info (METADATA,
    entry_points.txt), as an installed distribution looks."""
    tmp = tmp_path_factory.mktemp("plugin")
    source = tmp / "src"
    shutil.copytree(PLUGIN, source)  # pip builds in the tree: keep the repository clean
    target = tmp / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    entry_points = next(target.glob("hpo_residual_mlp-*.dist-info")) / "entry_points.txt"
    assert "residual_mlp = residual_mlp:build" in entry_points.read_text()
    return target


@pytest.fixture
def service(site: Path, database_url: str, tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, workers=1, db_url=database_url, env={"PYTHONPATH": str(site)})
    yield svc
    assert svc.stop() == 0, svc.log()


def submit(svc: Service, spec: dict[str, Any]) -> int:
    response = svc.client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def model_of(svc: Service, trial_id: int) -> Checkpoint:
    response = svc.client.get(f"/api/trials/{trial_id}/model")
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Family"] == "residual_mlp"
    return load_checkpoint(response.content)


def test_the_residual_mlp_plugin_trains_diagnoses_and_transfers(
    service: Service, site: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_spec = tiny_spec(unique("resmlp"), n_trials=2, model={"family": "residual_mlp"})
    a_spec["dataset"] = {"name": "wine"}
    a_spec["objective"]["max_epochs"] = 3
    a_spec["fixed"] = {"hidden_layers": 1, "hidden_units": 16, "dropout": 0.1}
    a_id = submit(service, a_spec)
    study = service.wait_finished(a_id)
    assert study["status"] == "completed", service.log()
    trials = service.trials(a_id)
    assert [t["state"] for t in trials] == ["complete", "complete"], trials
    for t in trials:
        detail = service.client.get(f"/api/trials/{t['trial_id']}").json()
        curves = detail["curves"]
        for i in range(len(GROUPS)):  # one per module owning weight matrices
            assert len(curves[f"grad_norm.{i}"]) == 3 and len(curves[f"weight_norm.{i}"]) == 3
        assert f"grad_norm.{len(GROUPS)}" not in curves
        assert len(curves["dead_fraction.0"]) == 3  # the block's ReLU
    with session_scope(database_url) as session:
        diagnosed = session.scalars(
            select(TrialDiagnosis.trial_id).where(TrialDiagnosis.study_id == a_id)
        ).all()
    assert sorted(diagnosed) == sorted(t["trial_id"] for t in trials)
    diagnosis = service.client.get(f"/api/trials/{trials[0]['trial_id']}/diagnosis")
    assert diagnosis.status_code == 200, diagnosis.text

    best = service.client.get(f"/api/studies/{a_id}/best").json()
    a = model_of(service, best["trial_id"])
    assert a.family == "residual_mlp" and a.parameter_groups == GROUPS
    monkeypatch.syspath_prepend(str(site))  # this process rebuilds it through the entry point
    importlib.invalidate_caches()
    model = rebuild_model(a)
    assert type(model).__name__ == "ResidualMLP"
    assert model(torch.zeros(2, 13)).shape == (2, 3)

    refused = tiny_spec(unique("resmlp-k"), model={"family": "residual_mlp"})
    refused["init_from"] = {"trial_id": best["trial_id"], "layers": 1}
    response = service.client.post("/api/studies", json=refused)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "init_from", "layers"]

    # B: one block deeper, from A's best, frozen: A's stem, block 0, norm and head come over
    # by name and shape and stay as they were; block 1 is B's own and trains.
    b_spec = {**a_spec, "name": unique("resmlp-b")}
    b_spec["fixed"] = {**a_spec["fixed"], "hidden_layers": 2}
    b_spec["init_from"] = {"trial_id": best["trial_id"], "freeze": True}
    b_id = submit(service, b_spec)
    assert service.wait_finished(b_id)["status"] == "completed", service.log()
    for t in service.trials(b_id):
        assert t["state"] == "complete", t
        b = model_of(service, t["trial_id"])
        for name in ("stem.weight", "blocks.0.fc1.weight", "blocks.0.fc2.bias", "head.weight"):
            assert torch.equal(b.state_dict[name], a.state_dict[name]), name
        assert "blocks.1.fc1.weight" in b.state_dict and "blocks.1.fc1.weight" not in a.state_dict
        curves = service.client.get(f"/api/trials/{t['trial_id']}").json()["curves"]
        # frozen groups get no gradient: only block 1's two Linear layers report one
        assert sorted(k for k in curves if k.startswith("grad_norm.")) == [
            "grad_norm.3",
            "grad_norm.4",
        ]
