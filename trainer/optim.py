"""Optimizers, weight decay (coupled or decoupled), the L1 penalty and gradient clipping.

Decay and penalties act on weights only (parameters with ndim >= 2: Linear/Conv weights),
never on biases or batch-norm parameters.

Weight decay, for an L2 strength λ (`weight_decay`):
- coupled (default): the cost is J + λ·ΣW², whose gradient adds 2λW. PyTorch's
  `weight_decay=wd` adds wd·W to the gradient inside the optimizer, so we pass wd = 2λ; the
  term then goes through momentum and adaptive scaling exactly as a loss term would.
- decoupled: before each step θ <- θ - η·λ·θ, outside the adaptive step (Loshchilov &
  Hutter). adam uses torch.optim.AdamW and nadam NAdam(decoupled_weight_decay=True), which
  apply exactly this; every other optimizer gets the same multiplication from a step
  pre-hook. For plain sgd the two modes differ only by the factor convention (decoupled λ
  equals coupled λ/2); with momentum or an adaptive rule they give different steps.
- adamw is decoupled by definition, whatever `weight_decay_mode` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trainer.config import TrainConfig

ADADELTA_EPS = 1e-6  # Zeiler's ε; `eps` belongs to the Adam family, rmsprop and adagrad

# Optimizers whose PyTorch class applies decoupled decay itself.
_NATIVE_DECOUPLED = ("adam", "adamw", "nadam")


def weight_params(model: nn.Module) -> list[nn.Parameter]:
    """The trainable weights (ndim >= 2) that decay and penalties apply to."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weights get `weight_decay`; biases and norm parameters never do."""
    others = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [
        {"params": weight_params(model), "weight_decay": weight_decay},
        {"params": others, "weight_decay": 0.0},
    ]


def _decoupled_decay(
    optimizer: torch.optim.Optimizer, _args: tuple[Any, ...], _kwargs: dict[str, Any]
) -> None:
    """Step pre-hook: θ <- θ·(1 - η·λ) for groups with a `decoupled_decay` λ, as AdamW does."""
    for group in optimizer.param_groups:
        lam = group.get("decoupled_decay", 0.0)
        params = [p for p in group["params"] if p.grad is not None]
        if lam and params:
            with torch.no_grad():
                torch._foreach_mul_(params, 1.0 - group["lr"] * lam)


def _can_fuse(model: nn.Module) -> bool | None:
    """PyTorch's fused kernels (one kernel for all parameters: about half the step time of
    the per-parameter loop for small models) exist for SGD and Adam(W) on CPU and CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    ok = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64)
        for p in params
    )
    return True if ok else None


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by `config.optimizer` with its own hyperparameters."""
    lam = config.weight_decay
    lr = config.lr
    name = config.optimizer
    if config.weight_decay_mode not in ("coupled", "decoupled"):
        raise ValueError(f"unknown weight_decay_mode {config.weight_decay_mode!r}")
    decoupled = config.weight_decay_mode == "decoupled" or name == "adamw"
    if not decoupled:
        groups = param_groups(model, 2.0 * lam)
    elif name in _NATIVE_DECOUPLED:
        groups = param_groups(model, lam)
    else:
        groups = param_groups(model, 0.0)
        groups[0]["decoupled_decay"] = lam
    betas = (config.beta1, config.beta2)
    fused = _can_fuse(model)
    opt: torch.optim.Optimizer
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, fused=fused)
    elif name == "momentum":
        # v <- βv + g; θ <- θ - ηv  (PyTorch's form of heavy-ball momentum)
        opt = torch.optim.SGD(groups, lr=lr, momentum=config.momentum, fused=fused)
    elif name == "nesterov":
        opt = torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=True, fused=fused)
    elif name == "adamw" or (name == "adam" and decoupled):
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=config.eps, fused=fused)
    elif name == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=betas, eps=config.eps, fused=fused)
    elif name == "nadam":
        opt = torch.optim.NAdam(
            groups, lr=lr, betas=betas, eps=config.eps, decoupled_weight_decay=decoupled
        )
    elif name == "rmsprop":
        opt = torch.optim.RMSprop(
            groups,
            lr=lr,
            alpha=config.rmsprop_alpha,
            eps=config.eps,
            momentum=config.rmsprop_momentum,
        )
    elif name == "adagrad":
        opt = torch.optim.Adagrad(groups, lr=lr, eps=config.eps)
    elif name == "adadelta":
        # PyTorch scales AdaDelta's step by lr; lr = 1 is the original, η-free rule.
        opt = torch.optim.Adadelta(groups, lr=lr, rho=config.adadelta_rho, eps=ADADELTA_EPS)
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    if decoupled and name not in _NATIVE_DECOUPLED and lam > 0:
        opt.register_step_pre_hook(_decoupled_decay)
    return opt


def l1_penalty(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ|W| over `weights`; its gradient is sign(W) (0 at W = 0)."""
    return torch.stack([w.abs().sum() for w in weights]).sum()


def clip_gradients(params: list[nn.Parameter], mode: str, threshold: float) -> None:
    """value: clamp each gradient element to [-c, c]; norm: rescale so ‖g‖₂ over all <= c."""
    if mode == "value":
        nn.utils.clip_grad_value_(params, threshold)
    elif mode == "norm":
        nn.utils.clip_grad_norm_(params, threshold)
    elif mode != "none":
        raise ValueError(f"unknown grad_clip {mode!r}")
