"""What the trainer needs to know of any `nn.Module`, shipped family or plug-in.

- `parameter_groups(model)`: the modules that own weight matrices (parameters with
  ndim >= 2: Linear, Conv, Embedding, a GRU's `weight_ih_l0`/`weight_hh_l0`, attention's
  `in_proj_weight`, ...), each with its module path, in `named_modules()` order (registration
  order, which for `nn.Sequential`s and models that register layers in the order they run is
  forward order). Gradient telemetry reports one value per group; norm layers' 1-D
  weights and biases are not groups. For a `TrainerModel` (mlp, cnn) the groups are exactly
  its weight layers: one per block, then the head.
- `relu_activations(model)`: the ReLU-family activation modules (dead-unit probes).
  Functional activations (`F.relu` inside `forward`) are invisible to it.
- `transfer_matching(model, state)`: copies every entry of a stored state dict whose name
  and shape match the model's (transfer learning for any module).
- `check_output(model, sample, n_outputs)`: a plug-in's model maps (batch, *input_shape) to
  (batch, n_outputs), checked once before training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

RELU_FAMILY = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.ReLU6, nn.PReLU, nn.RReLU, nn.CELU, nn.SELU)


@dataclass(frozen=True)
class ParameterGroup:
    """The weight matrices one module owns directly; `name` is its module path ("" is the
    root module itself)."""

    name: str
    tensors: tuple[nn.Parameter, ...]


def parameter_groups(model: nn.Module) -> list[ParameterGroup]:
    """One group per module that directly owns parameters of ndim >= 2, in `named_modules()`
    order; a parameter shared by several modules (tied weights) counts in the first only."""
    seen: set[int] = set()
    groups: list[ParameterGroup] = []
    for path, module in model.named_modules():
        own = []
        for p in module.parameters(recurse=False):
            if p.ndim >= 2 and id(p) not in seen:
                seen.add(id(p))
                own.append(p)
        if own:
            groups.append(ParameterGroup(path, tuple(own)))
    return groups


def relu_activations(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, module) of every ReLU-family activation module, in `named_modules()`
    order."""
    return [(path, m) for path, m in model.named_modules() if isinstance(m, RELU_FAMILY)]


class TransferMismatch(ValueError):
    """No stored parameter fits the model by name and shape."""


def transfer_matching(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy into `model` every entry of `state` (a stored `state_dict`) whose name exists in
    the model's state dict with the same shape; returns the names copied, in the model's
    order. Entries of other names or shapes (a head for another number of classes, a block
    this model does not have) are left as the model initialized them.

    Raises `TransferMismatch` if nothing matches.
    """
    own = model.state_dict()
    matched = {
        name: tensor
        for name, tensor in state.items()
        if name in own and tuple(own[name].shape) == tuple(tensor.shape)
    }
    if not matched:
        raise TransferMismatch(
            "no stored parameter matches this model by name and shape (stored: "
            f"{sorted(state)[:5]}..., this model: {sorted(own)[:5]}...)"
        )
    model.load_state_dict(matched, strict=False)
    return [name for name in own if name in matched]


@torch.no_grad()
def check_output(model: nn.Module, sample: torch.Tensor, n_outputs: int) -> None:
    """Raise `ValueError` unless `model(sample)` (in evaluation mode, so no dropout draw and
    no batch-norm statistics update) is shaped (len(sample), n_outputs)."""
    was_training = model.training
    model.eval()
    try:
        out = model(sample)
    finally:
        model.train(was_training)
    expected = (int(sample.shape[0]), int(n_outputs))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model family's module maps a batch shaped {tuple(sample.shape)} to {got}; "
            f"it must return {expected} (batch, outputs)"
        )
