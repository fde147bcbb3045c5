"""Gradient-health telemetry, recorded as curve values every epoch.

For weight layer i (in `weight_layers(model)` order, head last):
- `grad_norm.{i}`: mean over the epoch's steps of ‖∂L/∂W_i‖₂, the gradient backprop
  produced (L1 term included, before clipping; coupled L2 acts inside the optimizer and is
  not part of it). Frozen layers have no gradient and no value.
- `weight_norm.{i}`: ‖W_i‖₂ (Frobenius) at the end of the epoch.
For hidden block i with a ReLU-family activation:
- `dead_fraction.{i}`: fraction of its units never positive over the validation split
  (a conv unit is a channel: never positive at any position of any example).

Norms accumulate on the device; an epoch costs one host sync for all values together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from trainer.model import TrainerModel, weight_layers

RELU_FAMILY = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.ReLU6, nn.PReLU, nn.RReLU, nn.CELU, nn.SELU)


def _activation(block: nn.Module) -> nn.Module | None:
    for m in block.modules():
        if isinstance(m, RELU_FAMILY):
            return m
    return None


def _weight(layer: nn.Module) -> torch.Tensor:
    w = layer.weight
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} has no weight tensor")
    return w


class GradientTelemetry:
    def __init__(self, model: TrainerModel) -> None:
        self.weights = [_weight(layer) for layer in weight_layers(model)]
        self._trained = [i for i, w in enumerate(self.weights) if w.requires_grad]
        self._trained_weights = [self.weights[i] for i in self._trained]
        w0 = self.weights[0]
        self._grad_sums = torch.zeros(len(self._trained), device=w0.device, dtype=w0.dtype)
        self._steps = 0
        self._probed = [
            (i, act) for i, block in enumerate(model.blocks) if (act := _activation(block))
        ]
        self._alive: list[torch.Tensor | None] = [None] * len(self._probed)

    def after_backward(self) -> None:
        """Add this step's per-layer gradient norms (no host sync)."""
        grads = [w.grad for w in self._trained_weights]
        if not grads or any(g is None for g in grads):
            return
        norms = torch._foreach_norm([g for g in grads if g is not None])
        self._grad_sums += torch.stack(norms)
        self._steps += 1

    def set_grad_norms(self, mean_norms: torch.Tensor) -> None:
        """Replace this epoch's accumulated gradient norms by `mean_norms` (one per trained
        weight layer, already averaged over the epoch's steps), as fused training measures
        them for all members at once (trainer/fused.py)."""
        self._grad_sums = mean_norms.detach().to(self._grad_sums.dtype).clone()
        self._steps = 1

    @contextmanager
    def watching_units(self) -> Iterator[None]:
        """While active, forward passes mark which units of each probed block fire."""
        handles: list[RemovableHandle] = []
        self._alive = [None] * len(self._probed)

        def hook_for(j: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
            def hook(_m: nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
                fired = (out > 0).transpose(0, 1).flatten(1).any(dim=1)  # per unit/channel
                seen = self._alive[j]
                self._alive[j] = fired if seen is None else seen | fired

            return hook

        for j, (_, act) in enumerate(self._probed):
            handles.append(act.register_forward_hook(hook_for(j)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def epoch_values(self) -> dict[str, float]:
        """This epoch's telemetry (one host sync); resets the gradient accumulators."""
        names: list[str] = []
        parts: list[torch.Tensor] = []
        if self._steps:
            names += [f"grad_norm.{i}" for i in self._trained]
            parts.append(self._grad_sums / self._steps)
        with torch.no_grad():
            names += [f"weight_norm.{i}" for i in range(len(self.weights))]
            parts.append(torch.stack(torch._foreach_norm(self.weights)))
            for j, (i, _) in enumerate(self._probed):
                alive = self._alive[j]
                if alive is not None:
                    names.append(f"dead_fraction.{i}")
                    parts.append(1.0 - alive.float().mean().reshape(1))
        values = torch.cat([p.double() for p in parts]).tolist()
        self._grad_sums.zero_()
        self._steps = 0
        return dict(zip(names, values, strict=True))
