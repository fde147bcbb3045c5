"""Model checkpoints: one `torch.save` file with a trained model's weights and everything
needed to rebuild the model (config, family, input shape, number of classes).

The file holds only tensors and plain Python values, so `torch.load(weights_only=True)`
reads it without unpickling arbitrary objects:

    ckpt = load_checkpoint("model.pt")
    model = rebuild_model(ckpt)  # in eval mode, on the CPU
    logits = model(x)            # x standardized like the training data (see ckpt.extra)

A regression model outputs standardized targets, shape (n, 1); the checkpoint carries the
training split's target mean and standard deviation, and `ckpt.to_target(model(x))` turns
outputs into the target's original units: y = output * target_std + target_mean.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from trainer.config import TrainConfig
from trainer.model import TrainerModel, build_model

FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    config: TrainConfig
    family: str
    input_shape: tuple[int, ...]
    n_classes: int
    state_dict: dict[str, torch.Tensor]
    # Provenance and metrics: e.g. the dataset spec, the final val_accuracy.
    extra: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"  # or "regression": n_classes is then 1, the one output
    target_mean: float = 0.0
    target_std: float = 1.0

    def to_target(self, output: torch.Tensor) -> torch.Tensor:
        """A regression model's outputs (n, 1) in the target's original units, (n,)."""
        return output[:, 0] * self.target_std + self.target_mean

    @property
    def n_blocks(self) -> int:
        return len({key.split(".")[1] for key in self.state_dict if key.startswith("blocks.")})

    def block_state(self, i: int) -> dict[str, torch.Tensor]:
        """The state dict of `blocks[i]`, keyed as `model.blocks[i].state_dict()` is."""
        prefix = f"blocks.{i}."
        return {k[len(prefix) :]: v for k, v in self.state_dict.items() if k.startswith(prefix)}


def checkpoint_bytes(
    model: TrainerModel,
    config: TrainConfig,
    *,
    family: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    extra: Mapping[str, Any] | None = None,
    task: str = "classification",
    target_mean: float = 0.0,
    target_std: float = 1.0,
) -> bytes:
    """The checkpoint file's bytes. Regression: `target_mean`/`target_std` are the training
    split's target statistics that the model's outputs are standardized with."""
    payload = {
        "format": FORMAT,
        "family": family,
        "config": dataclasses.asdict(config),
        "input_shape": [int(d) for d in input_shape],
        "n_classes": int(n_classes),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
        "task": task,
        "target": {"mean": float(target_mean), "std": float(target_std)},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_checkpoint(source: bytes | str | Path | IO[bytes]) -> Checkpoint:
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    payload = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError("not a model checkpoint of this trainer (format 1)")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    # A checkpoint written by a newer trainer may carry parameters this one does not know.
    config = TrainConfig(**{k: v for k, v in payload["config"].items() if k in known})
    return Checkpoint(
        config=config,
        family=str(payload["family"]),
        input_shape=tuple(int(d) for d in payload["input_shape"]),
        n_classes=int(payload["n_classes"]),
        state_dict=dict(payload["state_dict"]),
        extra=dict(payload.get("extra", {})),
        # Checkpoints written before regression existed are classification models.
        task=str(payload.get("task", "classification")),
        target_mean=float(payload.get("target", {}).get("mean", 0.0)),
        target_std=float(payload.get("target", {}).get("std", 1.0)),
    )


def rebuild_model(ckpt: Checkpoint) -> TrainerModel:
    """The checkpoint's model with its weights, in evaluation mode."""
    model = build_model(ckpt.config, ckpt.input_shape, ckpt.n_classes)
    model.load_state_dict(ckpt.state_dict)
    return model.eval()
