"""Gradient-health telemetry, recorded as curve values every epoch, for any `nn.Module`.

Group i is the i-th module owning weight matrices (`trainer.modules.parameter_groups`: a
Linear, Conv, Embedding, GRU, attention layer, ...; for the shipped mlp/cnn exactly their
weight layers, the head last). With W_i the group's weight matrices together:
- `grad_norm.{i}`: mean over the epoch's steps of ‖∂L/∂W_i‖₂, the gradient backprop
  produced (L1 term included, before clipping; coupled L2 acts inside the optimizer and is
  not part of it). Frozen groups have no gradient and no value; a step in which a group got
  no gradient (an unused branch) does not count for it.
- `weight_norm.{i}`: ‖W_i‖₂ (Frobenius, over all its matrices) at the end of the epoch.
For the j-th ReLU-family activation module (`trainer.modules.relu_activations`):
- `dead_fraction.{j}`: fraction of its units never positive over the validation split. A
  unit is an index of dimension 1 (PyTorch's (batch, features) and (batch, channels, ...)
  convention; a conv unit is a channel: never positive at any position of any example). In
  the mlp and cnn, activation j is block j's. A module applied to differently shaped
  inputs within one pass gets no value.
`GradientTelemetry.group_names` gives each index's module path ("blocks.0.0", "head").

Norms accumulate on the device; an epoch costs one host sync for all values together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from trainer.modules import RELU_FAMILY, parameter_groups, relu_activations

__all__ = ["RELU_FAMILY", "GradientTelemetry"]


class GradientTelemetry:
    def __init__(self, model: nn.Module) -> None:
        groups = parameter_groups(model)  # none (only 1-D parameters): no norms, no error
        self.group_names = [g.name for g in groups]
        self.weights: list[torch.Tensor] = [t for g in groups for t in g.tensors]
        self._weight_group = [i for i, g in enumerate(groups) for _ in g.tensors]
        trained = [k for k, w in enumerate(self.weights) if w.requires_grad]
        # the shipped families: one matrix per group, all trained; a step is one add
        self._dense = len(trained) == len(groups)
        self._trained_weights = [self.weights[k] for k in trained]
        self._trained_groups = sorted({self._weight_group[k] for k in trained})
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = self.weights[0].dtype if self.weights else torch.float32
        self._n_groups = len(groups)
        # group index of each trained tensor, as a device tensor for index_add_
        self._ids = torch.tensor(
            [self._weight_group[k] for k in trained], device=device, dtype=torch.long
        )
        self._all_ids = torch.tensor(self._weight_group, device=device, dtype=torch.long)
        self._grad_sums = torch.zeros(self._n_groups, device=device, dtype=dtype)
        self._grad_steps = torch.zeros(self._n_groups, device=device, dtype=dtype)
        self._all_present = torch.zeros(self._n_groups, device=device, dtype=dtype)
        self._all_present[self._trained_groups] = 1.0
        self._steps = 0
        self._full_steps = 0  # steps in which every trained tensor had a gradient
        self._probed = relu_activations(model)
        self._alive: list[torch.Tensor | None] = [None] * len(self._probed)
        self._mixed: set[int] = set()

    def after_backward(self) -> None:
        """Add this step's per-group gradient norms (no host sync)."""
        grads = [w.grad for w in self._trained_weights]
        present = [k for k, g in enumerate(grads) if g is not None]
        if not present:
            return
        complete = len(present) == len(grads)
        if complete:
            norms = torch.stack(torch._foreach_norm([g for g in grads if g is not None]))
            ids = self._ids
            self._full_steps += 1  # counted on the host: no device op for the common case
        else:  # some tensors got no gradient this step: count only the groups that did
            norms = torch.stack(torch._foreach_norm([grads[k] for k in present]))  # type: ignore[misc]
            ids = self._ids[present]
            self._grad_steps += torch.zeros_like(self._grad_steps).index_fill_(0, ids, 1.0)
        if self._dense and complete:
            self._grad_sums += norms.to(self._grad_sums.dtype)
        else:  # ‖W_i‖ over a group's matrices: √(Σ ‖W_ik‖²)
            squares = torch.zeros_like(self._grad_sums).index_add_(
                0, ids, norms.to(self._grad_sums.dtype).square()
            )
            self._grad_sums += squares.sqrt()
        self._steps += 1

    def set_grad_norms(self, mean_norms: torch.Tensor) -> None:
        """Replace this epoch's accumulated gradient norms by `mean_norms` (one per trained
        weight layer, already averaged over the epoch's steps), as fused training measures
        them for all members at once (trainer/fused.py)."""
        norms = mean_norms.detach().to(self._grad_sums.dtype)
        if norms.shape[0] == self._grad_sums.shape[0]:
            self._grad_sums = norms.clone()
        else:  # one per trained group: place them at the trained groups' positions
            self._grad_sums = torch.zeros_like(self._grad_sums)
            self._grad_sums[self._trained_groups] = norms
        self._grad_steps.zero_()
        self._steps = self._full_steps = 1  # the means count as one full step

    @contextmanager
    def watching_units(self) -> Iterator[None]:
        """While active, forward passes mark which units of each probed activation fire."""
        handles: list[RemovableHandle] = []
        self._alive = [None] * len(self._probed)
        self._mixed = set()

        def hook_for(j: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
            def hook(_m: nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
                if not isinstance(out, torch.Tensor) or out.ndim < 2:
                    self._mixed.add(j)
                    return
                fired = (out > 0).transpose(0, 1).flatten(1).any(dim=1)  # per unit/channel
                seen = self._alive[j]
                if seen is not None and seen.shape != fired.shape:
                    self._mixed.add(j)  # one module used at several widths: no attribution
                    return
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
        parts: list[torch.Tensor] = [torch.zeros(0, device=self._grad_sums.device)]
        if self._steps and self._trained_groups:
            names += [f"grad_norm.{i}" for i in self._trained_groups]
            counts = self._all_present * self._full_steps + self._grad_steps
            means = self._grad_sums / counts.clamp(min=1.0)
            # a group that never got a gradient this epoch reports NaN, dropped below
            means = torch.where(counts > 0, means, torch.nan)
            parts.append(means[self._trained_groups])
        with torch.no_grad():
            if self.weights:
                names += [f"weight_norm.{i}" for i in range(self._n_groups)]
                norms = torch.stack(torch._foreach_norm(self.weights)).to(self._grad_sums.dtype)
                squares = torch.zeros_like(self._grad_sums).index_add_(
                    0, self._all_ids, norms.square()
                )
                parts.append(squares.sqrt())
            for j in range(len(self._probed)):
                alive = self._alive[j]
                if alive is not None and j not in self._mixed:
                    names.append(f"dead_fraction.{j}")
                    parts.append(1.0 - alive.float().mean().reshape(1))
        values = torch.cat([p.double() for p in parts]).tolist()
        self._grad_sums.zero_()
        self._grad_steps.zero_()
        self._steps = self._full_steps = 0
        return {
            name: value
            for name, value in zip(names, values, strict=True)
            if not (name.startswith("grad_norm.") and value != value)  # NaN: no gradient
        }
