"""A residual MLP for tabular data, as an `hpo.models` plug-in (`model.family: residual_mlp`).

    x (batch, *input_shape) -> flatten -> stem Linear(features, width)
      -> blocks x depth:  h + Dropout(Linear(act(Linear(LayerNorm(h)))))   (pre-norm residual)
      -> LayerNorm -> head Linear(width, n_classes)

From the study's configuration (`TrainConfig`): width = `hidden_units`, depth =
`hidden_layers` (0 is a linear model on the stem), the inner width of a block =
`hidden_units` (the mlp's `hidden_units_shrink` is not used), `dropout` inside each block,
the hidden `activation` (relu, leaky_relu, elu, tanh, sigmoid) and the `init` scheme of
every Linear. Batch norm does not apply (LayerNorm is part of the design). Parameter names
are stable across depths (`blocks.{i}.fc1.weight`), so `init_from` a shallower trial reuses
its blocks by name and shape.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.initialization import init_weights
from trainer.model import build_activation

__all__ = ["ResidualBlock", "ResidualMLP", "build"]


class ResidualBlock(nn.Module):
    """h + dropout(fc2(act(fc1(norm(h))))): the pre-norm residual block (He et al. 2016,
    "Identity mappings in deep residual networks"); the skip keeps gradients flowing."""

    def __init__(self, width: int, inner: int, act: nn.Module, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, inner)
        self.act = act
        self.fc2 = nn.Linear(inner, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dropout(self.fc2(self.act(self.fc1(self.norm(h)))))
        return h + out


class ResidualMLP(nn.Module):
    """(batch, *input_shape) -> (batch, n_classes) logits."""

    def __init__(
        self, n_features: int, n_classes: int, width: int, depth: int, config: TrainConfig
    ) -> None:
        super().__init__()
        self.stem = nn.Linear(n_features, width)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                width,
                width,
                build_activation(
                    config.activation, slope=config.leaky_relu_slope, alpha=config.elu_alpha
                ),
                config.dropout,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x.flatten(1))
        for block in self.blocks:
            h = block(h)
        out: torch.Tensor = self.head(self.norm(h))
        return out


def build(
    config: TrainConfig,
    input_shape: tuple[int, ...],
    n_classes: int,
    task: str = "classification",
) -> nn.Module:
    """The `hpo.models` builder: a `ResidualMLP` for samples shaped `input_shape`, its
    Linear layers initialized per `config.init`. `task` is accepted for trainers that pass
    it (a regression model has n_classes = 1 output, linear like every head here)."""
    del task  # the head is linear either way; the loss is the trainer's
    model = ResidualMLP(
        math.prod(int(d) for d in input_shape),
        n_classes,
        width=config.hidden_units,
        depth=config.hidden_layers,
        config=config,
    )
    init_weights([m for m in model.modules() if isinstance(m, nn.Linear)], config)
    return model
