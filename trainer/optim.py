"""Optimizers, with weight decay applied as L2 strength on weights only."""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import TrainConfig


def param_groups(model: nn.Module, l2_grad_coef: float) -> list[dict[str, object]]:
    """Weights (ndim >= 2) get the decay; biases and norm parameters never do."""
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    others = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [
        {"params": weights, "weight_decay": l2_grad_coef},
        {"params": others, "weight_decay": 0.0},
    ]


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by `config.optimizer`.

    L2: the cost is J + λ·ΣW², whose gradient adds 2λW; PyTorch's coupled `weight_decay`
    adds wd·W to the gradient, so we pass wd = 2λ. AdamW is the exception: its decay is
    decoupled (θ <- θ - η·λ·θ, outside the adaptive step), which is what AdamW means.
    """
    lam = config.weight_decay
    lr = config.lr
    name = config.optimizer
    if name == "adamw":
        return torch.optim.AdamW(param_groups(model, lam), lr=lr)
    groups = param_groups(model, 2.0 * lam)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "momentum":
        # v <- βv + g; θ <- θ - ηv  (PyTorch's form of heavy-ball momentum)
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    if name == "nesterov":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")
