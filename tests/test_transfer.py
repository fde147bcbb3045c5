"""Saved models (GET /api/trials/{id}/model) and transfer learning (init_from), over a real
server and database with a real worker training in-process."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
import torch
from torch import nn

from service.core.settings import Settings
from service.trials.transfer import freeze
from service.worker.process import WorkerProcess
from tests.conftest import tiny_spec, unique
from trainer import evaluate, load_dataset
from trainer.checkpoint import Checkpoint, load_checkpoint, rebuild_model
from trainer.model import TrainerModel


def run_worker(settings: Settings, *study_ids: int) -> None:
    """An in-process worker that runs these studies until they are done: only these, for the
    shared database also holds other tests' studies, some left with budget."""
    WorkerProcess(settings, [str(i) for i in study_ids]).run(until_idle=True, install_signals=False)


def submit(client: httpx.Client, spec: dict[str, Any]) -> int:
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def source_spec(name: str) -> dict[str, Any]:
    """Moons (2 features, 2 classes) through 2 hidden blocks of 16 units."""
    spec = tiny_spec(name, n_trials=2)
    spec["objective"]["max_epochs"] = 3
    spec["fixed"] = {"hidden_layers": 2, "hidden_units": 16}
    return spec


def target_spec(name: str, trial_id: int, **init_from: Any) -> dict[str, Any]:
    """Blobs: also 2 features, but 3 classes, so the head must be replaced."""
    spec = source_spec(name)
    spec["dataset"] = {"name": "blobs", "n_samples": 200, "noise": 1.0}
    spec["init_from"] = {"trial_id": trial_id, **init_from}
    return spec


def train_source(client: httpx.Client, settings: Settings) -> int:
    study_id = submit(client, source_spec(unique("source")))
    run_worker(settings, study_id)
    return int(client.get(f"/api/studies/{study_id}/best").json()["trial_id"])


def download(client: httpx.Client, trial_id: int) -> Checkpoint:
    response = client.get(f"/api/trials/{trial_id}/model")
    assert response.status_code == 200, response.text
    return load_checkpoint(response.content)


def test_downloaded_model_reproduces_the_recorded_val_accuracy(
    client: httpx.Client, settings: Settings
) -> None:
    trial_id = train_source(client, settings)

    response = client.get(f"/api/trials/{trial_id}/model")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert f'filename="trial-{trial_id}-model.pt"' in response.headers["content-disposition"]
    assert response.headers["x-content-sha256"] == hashlib.sha256(response.content).hexdigest()
    ckpt = load_checkpoint(response.content)
    assert (ckpt.family, ckpt.input_shape, ckpt.n_classes) == ("mlp", (2,), 2)
    assert (ckpt.config.hidden_layers, ckpt.config.hidden_units) == (2, 16)
    model = rebuild_model(ckpt)
    splits = load_dataset(**ckpt.extra["dataset"])  # the trial's splits, as the README says
    _, val_accuracy = evaluate(
        model, torch.from_numpy(splits.x_val), torch.from_numpy(splits.y_val)
    )
    trial = client.get(f"/api/trials/{trial_id}").json()
    assert trial["has_model"] is True
    assert trial["warnings"] == []
    assert val_accuracy == pytest.approx(trial["value"], abs=1e-12)
    assert val_accuracy == pytest.approx(trial["curves"]["val_accuracy"][-1][1], abs=1e-12)
    assert 0.5 < val_accuracy <= 1.0


def test_model_is_404_with_a_reason(client: httpx.Client, settings: Settings) -> None:
    missing = client.get("/api/trials/999999/model")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "trial 999999 not found"
    # Nesterov without momentum fails when the optimizer is built: no model is stored.
    failing = tiny_spec(
        unique("no-model"),
        fixed={"optimizer": "nesterov", "momentum": 0.0},
        budget={"n_trials": 1, "max_failed_trials": 0},
    )
    study_id = submit(client, failing)
    run_worker(settings, study_id)
    trial = client.get(f"/api/studies/{study_id}/trials").json()["items"][0]
    assert trial["state"] == "fail"
    response = client.get(f"/api/trials/{trial['trial_id']}/model")
    assert response.status_code == 404
    assert "has no saved model: it failed" in response.json()["detail"]
    assert client.get(f"/api/trials/{trial['trial_id']}").json()["has_model"] is False


def test_init_from_is_validated_at_submit(client: httpx.Client, settings: Settings) -> None:
    source = train_source(client, settings)
    failing = tiny_spec(
        unique("failed-source"),
        fixed={"optimizer": "nesterov", "momentum": 0.0},
        budget={"n_trials": 1, "max_failed_trials": 0},
    )
    failed_study = submit(client, failing)
    run_worker(settings, failed_study)
    failed = client.get(f"/api/studies/{failed_study}/trials").json()["items"][0]["trial_id"]

    def shallow(spec: dict[str, Any]) -> None:
        spec["fixed"]["hidden_layers"] = 1

    def searched_depth(spec: dict[str, Any]) -> None:
        del spec["fixed"]["hidden_layers"]
        spec["space"]["hidden_layers"] = {"type": "int", "low": 1, "high": 3}

    cases: list[tuple[dict[str, Any], Any, str, str]] = [
        ({"trial_id": 999999}, None, "trial_id", "trial 999999 not found"),
        ({"trial_id": failed}, None, "trial_id", "has no saved model: it failed"),
        ({"trial_id": source, "layers": 3}, None, "layers", "3 > 2"),
        ({"trial_id": source, "layers": 2}, shallow, "layers", "hidden_layers can be 1"),
        ({"trial_id": source}, searched_depth, "layers", "hidden_layers can be 1"),
        ({"trial_id": source, "layers": 0}, None, "layers", "greater than or equal to 1"),
    ]
    for init_from, mutate, field, words in cases:
        spec = target_spec(unique("bad-init"), **init_from)
        if mutate is not None:
            mutate(spec)
        response = client.post("/api/studies", json=spec)
        assert response.status_code == 422, (init_from, response.text)
        detail = response.json()["detail"]
        assert any(e["loc"][-2:] == ["init_from", field] and words in e["msg"] for e in detail), (
            init_from,
            detail,
        )
        names = [s["name"] for s in client.get("/api/studies", params={"limit": 1000}).json()]
        assert spec["name"] not in names


def block_weights(ckpt: Checkpoint, i: int) -> dict[str, torch.Tensor]:
    return ckpt.block_state(i)


def weight_of(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The block's weight matrix: its largest tensor."""
    return max(state.values(), key=lambda t: t.numel())


def test_frozen_transfer_keeps_the_reused_blocks_and_replaces_the_head(
    client: httpx.Client, settings: Settings
) -> None:
    source = train_source(client, settings)
    frozen = submit(client, target_spec(unique("frozen"), source, layers=1, freeze=True))
    tuned = target_spec(unique("tuned"), source, freeze=False)
    tuned["space"]["lr"] = {"type": "float", "low": 1e-6, "high": 2e-6}
    tuned["fixed"]["optimizer"] = "sgd"
    tuned_id = submit(client, tuned)

    run_worker(settings, frozen, tuned_id)

    a = download(client, source)
    for study_id in (frozen, tuned_id):
        assert client.get(f"/api/studies/{study_id}").json()["status"] == "completed"
    for t in client.get(f"/api/studies/{frozen}/trials").json()["items"]:
        b = download(client, t["trial_id"])
        assert b.n_classes == 3 and b.state_dict["head.weight"].shape == (3, 16)
        reused, fresh = block_weights(b, 0), block_weights(b, 1)
        assert reused.keys() == block_weights(a, 0).keys()
        for name, tensor in reused.items():
            assert torch.equal(tensor, block_weights(a, 0)[name]), name
        # Block 1 was not reused: it started from a fresh initialization and trained.
        difference = weight_of(fresh) - weight_of(block_weights(a, 1))
        assert float(difference.abs().mean()) > 0.05
    for t in client.get(f"/api/studies/{tuned_id}/trials").json()["items"]:
        b = download(client, t["trial_id"])
        for i in (0, 1):
            for name, tensor in block_weights(b, i).items():
                source_tensor = block_weights(a, i)[name]
                # Started from the source's weights, then trained (a tiny learning rate).
                assert not torch.equal(tensor, source_tensor), (i, name)
                assert torch.allclose(tensor, source_tensor, atol=1e-3), (i, name)


def test_a_shape_mismatch_fails_the_trial_with_the_reason(
    client: httpx.Client, settings: Settings
) -> None:
    source = train_source(client, settings)
    spec = target_spec(unique("mismatch"), source)
    spec["fixed"]["hidden_units"] = 32
    spec["budget"] = {"n_trials": 1, "max_failed_trials": 0}
    study_id = submit(client, spec)

    run_worker(settings, study_id)

    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "failed"
    trial = client.get(f"/api/studies/{study_id}/trials").json()["items"][0]
    assert trial["state"] == "fail"
    assert (
        f"shape mismatch at blocks.0.1.weight: (16, 2) in trial {source}, (32, 2) here"
        in trial["error"]
    )


def test_freeze_stops_gradients_and_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
    model = TrainerModel(nn.Sequential(), [block], nn.Linear(8, 2))
    before = {k: v.clone() for k, v in block.state_dict().items()}
    freeze(block)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = model(torch.randn(16, 4) * 3 + 1).logsumexp(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    assert model.head.training and not block[1].training
    assert all(not p.requires_grad for p in block.parameters())
    for name, tensor in block.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # running stats included
    assert model.head.weight.grad is not None


def test_init_from_checks_the_family_and_the_depth_of_a_cnn(
    client: httpx.Client, settings: Settings
) -> None:
    cnn = tiny_spec(unique("cnn-source"), n_trials=1)
    cnn["dataset"] = {"name": "digits", "shape": "image"}
    cnn["model"] = {"family": "cnn"}
    cnn["objective"]["max_epochs"] = 1
    cnn["fixed"] = {"conv_blocks": 1, "conv_channels": 4, "hidden_layers": 1, "hidden_units": 8}
    study_id = submit(client, cnn)
    run_worker(settings, study_id)
    source = client.get(f"/api/studies/{study_id}/best").json()["trial_id"]
    assert download(client, source).n_blocks == 2  # one conv block, one dense block

    mlp = target_spec(unique("mlp-from-cnn"), source)
    response = client.post("/api/studies", json=mlp)
    assert response.status_code == 422
    assert "trained a cnn model; this study's model.family is mlp" in response.text
    shallow = {**cnn, "name": unique("shallow-cnn"), "init_from": {"trial_id": source}}
    shallow["fixed"] = {**cnn["fixed"], "hidden_layers": 0}
    response = client.post("/api/studies", json=shallow)
    assert response.status_code == 422
    assert "reuses 2 blocks, but this study's conv_blocks + hidden_layers can be 1" in (
        response.text
    )
    deep = {**shallow, "name": unique("deep-cnn"), "fixed": cnn["fixed"]}
    created = client.post("/api/studies", json=deep)
    assert created.status_code == 201, created.text
    client.post(f"/api/studies/{created.json()['id']}/stop")  # other tests' workers go idle
