"""Model families from the `hpo.models` entry points: a plug-in installed (as a dist-info on
sys.path) is accepted in specs and trained by workers; unknown names are 422."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.core.settings import Settings
from service.studies.model_families import available, builder_for
from service.worker.process import WorkerProcess
from tests.conftest import backends, tiny_spec, unique
from tests.dataset_files import npz_bytes
from tests.private_db import module_database


@pytest.fixture(scope="module", params=backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This module's own database (see tests/private_db.py)."""
    yield from module_database(request, tmp_path_factory)


PLUGIN = """
from torch import nn

from trainer.model import TrainerModel

CALLS = []


def build_linear_probe(config, input_shape, n_classes):
    CALLS.append((tuple(input_shape), n_classes, config.lr))
    n = 1
    for size in input_shape:
        n *= size
    block = nn.Sequential(nn.Flatten(), nn.Linear(n, 8), nn.ReLU())
    return TrainerModel(nn.Sequential(), [block], nn.Linear(8, n_classes))


def not_a_model_builder():
    raise AssertionError("shipped families cannot be replaced")
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed distribution registering `linear_probe` (and trying to take `mlp`)."""
    site = tmp_path / "site"
    (site / "hpo_test_models-0.1.dist-info").mkdir(parents=True)
    (site / "hpo_test_models.py").write_text(PLUGIN)
    (site / "hpo_test_models-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hpo-test-models\nVersion: 0.1\n"
    )
    (site / "hpo_test_models-0.1.dist-info" / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [hpo.models]
            linear_probe = hpo_test_models:build_linear_probe
            mlp = hpo_test_models:not_a_model_builder
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    yield "linear_probe"
    sys.modules.pop("hpo_test_models", None)


def test_unknown_family_is_422_naming_the_field(client: httpx.Client) -> None:
    spec = tiny_spec(unique("fam"), model={"family": "resnet_from_the_internet"})
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "model", "family"]
    assert "unknown model family 'resnet_from_the_internet'" in error["msg"]
    assert "hpo.models" in error["msg"]


def test_a_registered_family_trains_on_n_d_data(
    plugin: str, client: httpx.Client, settings: Settings
) -> None:
    assert plugin in available()
    assert builder_for("mlp") is None  # the shipped MLP is not taken over by a plug-in

    name = unique("nd")
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.standard_normal((90, 2, 8)) + y[:, None, None]
    assert (
        client.post(
            "/api/datasets", data={"name": name}, files={"file": ("d.npz", npz_bytes(X=x, y=y))}
        ).status_code
        == 201
    )
    spec = tiny_spec(unique("probe"), model={"family": plugin}, dataset={"name": name})
    created = client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text

    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    study = client.get(f"/api/studies/{created.json()['id']}").json()
    assert study["status"] == "completed", study
    import hpo_test_models  # type: ignore[import-not-found]

    trained = [c for c in hpo_test_models.CALLS if c[0] == (2, 8)]
    assert len(trained) == 2  # one model per trial, built for (channels, length) inputs
    assert all(n_classes == 3 for _, n_classes, _ in trained)
    assert {lr for *_, lr in trained} == set(
        t["params"]["lr"]
        for t in client.get(f"/api/studies/{created.json()['id']}/trials").json()["items"]
    )


def test_a_plugin_studys_learning_curve_trains_the_plugin_model(
    plugin: str, client: httpx.Client, settings: Settings
) -> None:
    name = unique("lc-nd")
    rng = np.random.default_rng(1)
    y = np.arange(120) % 3
    x = rng.standard_normal((120, 2, 8)) + y[:, None, None]
    files = {"file": ("d.npz", npz_bytes(X=x, y=y))}
    assert client.post("/api/datasets", data={"name": name}, files=files).status_code == 201
    spec = tiny_spec(unique("lc-probe"), n_trials=1, model={"family": plugin})
    spec["dataset"] = {"name": name}
    study_id = client.post("/api/studies", json=spec).json()["id"]
    WorkerProcess(settings).run(until_idle=True, install_signals=False)
    import hpo_test_models

    before = len(hpo_test_models.CALLS)
    queued = client.post(f"/api/studies/{study_id}/learning-curve", json={"fractions": [0.5, 1]})
    assert queued.status_code == 202, queued.text
    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    job = client.get(f"/api/studies/{study_id}/learning-curve").json()
    assert job["state"] == "complete", job
    # One plug-in model per size: the curve trains the study's family, not the MLP.
    assert [c[0] for c in hpo_test_models.CALLS[before:]] == [(2, 8), (2, 8)]
