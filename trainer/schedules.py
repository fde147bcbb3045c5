"""Per-epoch learning-rate schedules and early stopping.

t is the epoch index starting at 0; the learning rate of epoch t is used for all of its
steps. The closed forms run through torch.optim.lr_scheduler.LambdaLR (η_t = η0·f(t)):
- exponential(k):   η_t = η0·e^(-k·t)
- step(gamma, n):   η_t = η0·gamma^⌊t/n⌋  (multiply by gamma every n epochs)
- inverse_time(k):  η_t = η0/(1 + k·t)
- reduce_on_plateau(factor, patience) is torch's ReduceLROnPlateau on the objective's
  metric: η <- factor·η once more than `patience` epochs passed without an improvement
  (relative threshold 1e-4, PyTorch's default).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from trainer.config import TrainConfig
from trainer.curve_stats import metric_mode

__all__ = ["EarlyStopping", "EpochSchedule", "lr_factor", "metric_mode"]


def lr_factor(config: TrainConfig) -> Callable[[int], float] | None:
    """f(t) with η_t = η0·f(t) for the closed-form schedules; None for the others."""
    name = config.lr_schedule
    k = config.lr_decay_k
    if name == "exponential":
        return lambda t: math.exp(-k * t)
    if name == "step":
        gamma, every = config.lr_step_gamma, config.lr_step_every
        return lambda t: gamma ** (t // every)
    if name == "inverse_time":
        return lambda t: 1.0 / (1.0 + k * t)
    if name in ("none", "reduce_on_plateau"):
        return None
    raise ValueError(f"unknown lr_schedule {name!r}")


class EpochSchedule:
    """Sets the optimizer's learning rate for the next epoch after each epoch ends."""

    def __init__(self, config: TrainConfig, optimizer: torch.optim.Optimizer) -> None:
        self._lambda: LambdaLR | None = None
        self._plateau: ReduceLROnPlateau | None = None
        factor = lr_factor(config)
        if factor is not None:
            self._lambda = LambdaLR(optimizer, factor)
        elif config.lr_schedule == "reduce_on_plateau":
            self._plateau = ReduceLROnPlateau(
                optimizer,
                mode="min" if metric_mode(config.monitor) == "min" else "max",
                factor=config.lr_plateau_factor,
                patience=config.lr_plateau_patience,
            )

    def step(self, metric: float) -> None:
        """The epoch that just ended scored `metric` on the objective."""
        if self._lambda is not None:
            self._lambda.step()
        elif self._plateau is not None:
            self._plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (epoch counter, or plateau best and bad-epoch count)."""
        scheduler = self._lambda or self._plateau
        return {} if scheduler is None else dict(scheduler.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s result (the optimizer's learning rates are the
        optimizer state's)."""
        scheduler = self._lambda or self._plateau
        if scheduler is not None and state:
            scheduler.load_state_dict(state)


class EarlyStopping:
    """Stop after `patience` epochs without an improvement larger than `min_delta`; keep a
    copy of the best epoch's weights to restore."""

    def __init__(self, patience: int, min_delta: float, mode: str) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.sign = 1.0 if mode == "min" else -1.0  # compare sign·metric, lower is better
        self.best = math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0

    def update(self, epoch: int, metric: float, model: nn.Module) -> bool:
        """Record epoch `epoch` (1-based) scoring `metric`; True when training should stop."""
        score = self.sign * metric
        if self.best_state is None or score < self.best - self.min_delta:
            self.best = score
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(model.state_dict())
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Best score and epoch, bad-epoch count and the best epoch's weights."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s result."""
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.best_state = state["best_state"]

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
