"""The training loop: fit(config, data, on_epoch) -> curves.

Per epoch, in order: shuffle -> [forward -> loss -> backward -> step] per mini-batch ->
evaluate train and validation splits under inference mode -> report to the callback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from trainer.config import TrainConfig
from trainer.data import TensorData
from trainer.model import TrainerModel, build_model
from trainer.optim import build_optimizer

CURVE_METRICS = (
    "train_loss",
    "val_loss",
    "train_accuracy",
    "val_accuracy",
    "lr",
    "epoch_seconds",
)

EVAL_BATCH = 4096  # rows per forward pass when evaluating; bounds memory on large splits


class DivergedError(RuntimeError):
    """Training produced a non-finite loss."""


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    values: dict[str, float]


@dataclass
class FitResult:
    model: TrainerModel
    curves: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    stopped_by_callback: bool = False


# The callback returns True to stop training (e.g. because the trial was pruned).
EpochCallback = Callable[[EpochMetrics], bool | None]
# Called with the freshly built model before the optimizer is made: load weights, freeze.
PrepareModel = Callable[[TrainerModel], None]


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on (x, y), in evaluation mode."""
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = 0
    for start in range(0, x.shape[0], EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH])
        target = y[start : start + EVAL_BATCH]
        total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train(was_training)
    n = max(int(x.shape[0]), 1)
    return total_loss / n, correct / n


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TensorData,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """One pass over a random permutation of the training split; returns the mean batch loss."""
    model.train()
    n = data.x_train.shape[0]
    perm = torch.randperm(n, generator=generator, device="cpu").to(data.x_train.device)
    losses = torch.zeros((), device=data.x_train.device)
    n_batches = 0
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses += loss.detach()
        n_batches += 1
    return float(losses) / max(n_batches, 1)  # one device sync per epoch, not per step


def fit(
    config: TrainConfig,
    data: TensorData,
    on_epoch: EpochCallback | None = None,
    *,
    prepare_model: PrepareModel | None = None,
) -> FitResult:
    """Train a model per `config` on `data`; call `on_epoch` after every epoch.

    `prepare_model(model)` runs after the model is built and before the optimizer is made;
    the optimizer only gets the parameters that still require gradients.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_model(config, tuple(data.x_train.shape[1:]), data.n_classes, layout=data.layout)
    model = model.to(data.x_train.device)
    if prepare_model is not None:
        prepare_model(model)
    optimizer = build_optimizer(config, model)
    result = FitResult(model=model, curves={m: [] for m in CURVE_METRICS})

    for epoch in range(1, config.max_epochs + 1):
        started = time.perf_counter()
        lr = float(optimizer.param_groups[0]["lr"])
        batch_loss = train_epoch(model, optimizer, data, config.batch_size, generator)
        if not math.isfinite(batch_loss):
            raise DivergedError(f"training loss became {batch_loss} at epoch {epoch}")
        train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
        if not math.isfinite(train_loss) or not math.isfinite(val_loss):
            raise DivergedError(
                f"loss became non-finite at epoch {epoch} (train {train_loss}, val {val_loss})"
            )
        values = {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_accuracy": train_acc,
            "val_accuracy": val_acc,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - started,
        }
        for name, value in values.items():
            result.curves[name].append(value)
        result.epochs_run = epoch
        if on_epoch is not None and on_epoch(EpochMetrics(epoch=epoch, values=values)):
            result.stopped_by_callback = True
            break
    return result
