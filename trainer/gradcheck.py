"""Gradient checking: back-propagated gradients against central differences (TECHNIQUES.md §8).

For a function f of tensors, J = Σ f(x)·v with a fixed random v (so vector-valued f work
too); each input element is nudged by ±eps in float64 and the numerical gradient
(J(θ+ε) - J(θ-ε)) / 2ε is compared with autograd's by the relative difference
‖a - b‖ / (‖a‖ + ‖b‖). Below ~1e-7 means the backward pass is right.

Slow (two forward passes per element): a test and debugging tool, never used in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Function = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class GradCheck:
    relative_error: float  # ‖analytic - numeric‖ / (‖analytic‖ + ‖numeric‖) over all inputs
    analytic: list[torch.Tensor]
    numeric: list[torch.Tensor]

    def ok(self, tol: float = 1e-7) -> bool:
        return self.relative_error < tol


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    denom = float(a.norm() + b.norm())
    return 0.0 if denom == 0 else float((a - b).norm()) / denom


def _central_differences(
    objective: Callable[[], torch.Tensor], tensors: Sequence[torch.Tensor], eps: float
) -> list[torch.Tensor]:
    """(J(θ+ε) - J(θ-ε)) / 2ε for every element of every tensor, nudged in place."""
    numeric = []
    with torch.no_grad():
        for t in tensors:
            grad = torch.zeros_like(t)
            flat, gflat = t.view(-1), grad.view(-1)
            for i in range(flat.numel()):
                orig = float(flat[i])
                flat[i] = orig + eps
                plus = float(objective())
                flat[i] = orig - eps
                minus = float(objective())
                flat[i] = orig
                gflat[i] = (plus - minus) / (2 * eps)
            numeric.append(grad)
    return numeric


def _compare(
    objective: Callable[[], torch.Tensor], tensors: Sequence[torch.Tensor], eps: float
) -> GradCheck:
    grads = torch.autograd.grad(objective(), list(tensors), allow_unused=True)
    analytic = [
        torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors, strict=True)
    ]
    numeric = _central_differences(objective, tensors, eps)
    a = torch.cat([g.reshape(-1) for g in analytic])
    n = torch.cat([g.reshape(-1) for g in numeric])
    return GradCheck(relative_error(a, n), analytic, numeric)


def _projection(out: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.randn(
        out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


def check_gradients(
    f: Function, inputs: Sequence[torch.Tensor], *, eps: float = 1e-6, seed: int = 0
) -> GradCheck:
    """Compare autograd's gradient of Σ f(*inputs)·v with central differences, in float64.

    `f` must be deterministic (re-seed inside it if it draws random numbers). The inputs
    are copied to float64; the originals are not changed.
    """
    xs = [x.detach().to(torch.float64).clone().requires_grad_(True) for x in inputs]
    with torch.no_grad():
        v = _projection(f(*xs), seed)
    return _compare(lambda: (f(*xs).to(torch.float64) * v).sum(), xs, eps)


def check_module(
    module: torch.nn.Module, x: torch.Tensor, *, eps: float = 1e-6, seed: int = 0
) -> GradCheck:
    """Gradient check of a module w.r.t. its input and all its trainable parameters.

    The module is converted to float64 in place and keeps its train/eval mode; its
    parameters are nudged in place and restored.
    """
    module.double()
    x64 = x.detach().to(torch.float64).clone().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    with torch.no_grad():
        v = _projection(module(x64), seed)
    return _compare(lambda: (module(x64) * v).sum(), [x64, *params], eps)
