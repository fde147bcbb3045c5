"""End to end through `hpo serve` with real worker processes: models downloaded with the
CLI, transfer learning between two studies, and a conditional search over the trainer's
techniques."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import tiny_spec
from tests.test_e2e import Service, hpo_cli
from trainer import evaluate, load_dataset
from trainer.checkpoint import load_checkpoint, rebuild_model
from trainer.params import PARAMS

pytestmark = pytest.mark.slow


@pytest.fixture
def service(served: Service) -> Service:
    """The shared service (SQLite): the subject here is the trainer through the service, not
    the database."""
    return served


def submit(svc: Service, spec: dict[str, Any]) -> int:
    response = svc.client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_transfer_between_studies_with_frozen_blocks(service: Service, tmp_path: Path) -> None:
    a_spec = tiny_spec("moons-source", n_trials=2)
    a_spec["dataset"] = {"name": "moons", "n_samples": 400, "noise": 0.2}
    a_spec["objective"]["max_epochs"] = 4
    a_spec["fixed"] = {"hidden_layers": 2, "hidden_units": 32}
    a_id = submit(service, a_spec)
    assert service.wait_finished(a_id)["status"] == "completed"
    best = service.client.get(f"/api/studies/{a_id}/best").json()

    # The CLI downloads A's best model; it rebuilds into a model that scores what the
    # trial recorded.
    a_file = tmp_path / "a.pt"
    out = hpo_cli(service, "model", str(best["trial_id"]), "-o", str(a_file))
    assert out.returncode == 0, out.stderr
    assert str(a_file) in out.stdout
    a = load_checkpoint(a_file)
    splits = load_dataset("moons", n_samples=400, noise=0.2)
    _, val_accuracy = evaluate(
        rebuild_model(a), torch.from_numpy(splits.x_val), torch.from_numpy(splits.y_val)
    )
    assert val_accuracy == pytest.approx(best["value"], abs=1e-12)

    # B: 3 blobs (3 classes), from A's two blocks, frozen, with a third block of its own.
    b_spec = tiny_spec("blobs-from-moons", n_trials=2)
    b_spec["dataset"] = {"name": "blobs", "n_samples": 300, "noise": 1.5}
    b_spec["objective"]["max_epochs"] = 3
    b_spec["fixed"] = {"hidden_layers": 3, "hidden_units": 32}
    b_spec["init_from"] = {"trial_id": best["trial_id"], "layers": 2, "freeze": True}
    b_id = submit(service, b_spec)
    assert service.wait_finished(b_id)["status"] == "completed"

    for t in service.trials(b_id):
        assert t["state"] == "complete"
        b_file = tmp_path / f"b-{t['trial_id']}.pt"
        out = hpo_cli(service, "model", str(t["trial_id"]), "-o", str(b_file))
        assert out.returncode == 0, out.stderr
        b = load_checkpoint(b_file)
        assert b.n_classes == 3 and b.n_blocks == 3
        assert b.state_dict["head.weight"].shape == (3, 32)
        for i in (0, 1):
            reused = b.block_state(i)
            assert reused.keys() == a.block_state(i).keys()
            for name, tensor in reused.items():
                assert torch.equal(tensor, a.block_state(i)[name]), (i, name)
    out = hpo_cli(service, "model", "999999", "-o", str(tmp_path / "none.pt"))
    assert out.returncode == 1 and "404: trial 999999 not found" in out.stderr
    assert not (tmp_path / "none.pt").exists()
    assert "Traceback" not in service.log()


TECHNIQUES = (
    "init",
    "batch_norm",
    "beta1",
    "beta2",
    "rmsprop_alpha",
    "lr_schedule",
    "lr_decay_k",
    "lr_step_gamma",
    "grad_clip",
    "grad_clip_threshold",
)
MISSING = [name for name in TECHNIQUES if name not in PARAMS]

CONDITIONS: dict[str, dict[str, list[str]]] = {
    "momentum": {"optimizer": ["momentum", "nesterov"]},
    "beta1": {"optimizer": ["adam"]},
    "beta2": {"optimizer": ["adam"]},
    "rmsprop_alpha": {"optimizer": ["rmsprop"]},
    "lr_decay_k": {"lr_schedule": ["exponential", "inverse_time"]},
    "lr_step_gamma": {"lr_schedule": ["step"]},
    "grad_clip_threshold": {"grad_clip": ["value", "norm"]},
}


def technique_spec() -> dict[str, Any]:
    spec = tiny_spec("techniques", n_trials=10)
    spec["dataset"] = {"name": "moons", "n_samples": 300, "noise": 0.2}
    spec["objective"]["max_epochs"] = 4
    spec["sampler"] = {"name": "tpe", "seed": 7, "n_startup_trials": 5}
    spec["fixed"] = {"hidden_layers": 2, "hidden_units": 16, "batch_size": 32}
    categorical = {
        "init": ["xavier_uniform", "he_normal", "auto"],
        "activation": ["relu", "tanh", "elu"],
        "batch_norm": ["none", "before", "after"],
        "optimizer": ["sgd", "momentum", "nesterov", "adam", "rmsprop"],
        "lr_schedule": ["none", "exponential", "step", "inverse_time"],
        "grad_clip": ["none", "value", "norm"],
    }
    ranges = {
        "momentum": (0.5, 0.95),
        "beta1": (0.8, 0.95),
        "beta2": (0.99, 0.9999),
        "rmsprop_alpha": (0.9, 0.99),
        "lr_decay_k": (0.05, 0.5),
        "lr_step_gamma": (0.3, 0.9),
        "grad_clip_threshold": (0.5, 5.0),
    }
    space: dict[str, Any] = {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}
    for name, choices in categorical.items():
        space[name] = {"type": "categorical", "choices": choices}
        for child, when in CONDITIONS.items():
            if name in when:
                low, high = ranges[child]
                space[child] = {"type": "float", "low": low, "high": high, "when": when}
    spec["space"] = space
    spec["enqueue"] = [
        {"lr": 0.0123, "optimizer": "adam", "lr_schedule": "exponential", "grad_clip": "norm"},
        {"lr": 0.0234, "optimizer": "nesterov", "lr_schedule": "step", "grad_clip": "none"},
    ]
    return spec


@pytest.mark.skipif(bool(MISSING), reason=f"trainer parameters not on this branch: {MISSING}")
def test_conditional_search_over_techniques(service: Service) -> None:
    study_id = submit(service, technique_spec())

    study = service.wait_finished(study_id, timeout=600)

    assert study["status"] == "completed", study
    trials = service.trials(study_id)
    assert len(trials) == 10 and all(t["state"] == "complete" for t in trials), trials
    for t in trials:
        params = t["params"]
        for child, when in CONDITIONS.items():
            ((parent, allowed),) = when.items()
            assert (child in params) == (params[parent] in allowed), (child, params)
        curve = service.client.get(f"/api/trials/{t['trial_id']}").json()["curves"]["lr"]
        lrs = [lr for _, lr in curve]
        assert lrs[0] == pytest.approx(params["lr"])
        if params["lr_schedule"] == "none":
            assert lrs == pytest.approx([params["lr"]] * len(lrs))
        elif params["lr_schedule"] == "exponential":  # lr0·exp(-k·t): a constant ratio
            for before, after in itertools.pairwise(lrs):
                assert after / before == pytest.approx(math.exp(-params["lr_decay_k"]))
    # The enqueued configurations ran as given, each with its own branch's parameters.
    for config, children in (
        (technique_spec()["enqueue"][0], {"beta1", "beta2", "lr_decay_k", "grad_clip_threshold"}),
        (technique_spec()["enqueue"][1], {"momentum", "lr_step_gamma"}),
    ):
        (ran,) = [t for t in trials if config.items() <= t["params"].items()]
        assert set(ran["params"]) & set(CONDITIONS) == children, ran
    assert "Traceback" not in service.log()
