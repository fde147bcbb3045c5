"""Model builders.

Every model is a `TrainerModel`: parameter-free input transforms that act in training mode
only (`inputs`), hidden `blocks` that each hold exactly one weight layer (Linear or Conv),
and the output `head` (a Linear producing logits). Transfer learning reuses `blocks[:k]`
and replaces `head`; gradient telemetry walks `weight_layers(model)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.config import TrainConfig


class TrainerModel(nn.Module):
    def __init__(self, inputs: nn.Sequential, blocks: Sequence[nn.Module], head: nn.Linear):
        super().__init__()
        self.inputs = inputs
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inputs(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(1))  # type: ignore[no-any-return]


def weight_layers(model: TrainerModel) -> list[nn.Module]:
    """The weight layers in forward order: one per block, then the head."""
    layers: list[nn.Module] = []
    for block in model.blocks:
        found = [m for m in block.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
        if len(found) != 1:
            raise ValueError(f"a block must hold exactly one weight layer, found {len(found)}")
        layers.append(found[0])
    layers.append(model.head)
    return layers


def build_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "elu":
        return nn.ELU(1.0)
    raise ValueError(f"unknown activation {name!r}")


def build_mlp(config: TrainConfig, n_features: int, n_outputs: int) -> TrainerModel:
    """Blocks [(Flatten) -> Linear -> activation -> Dropout] x hidden_layers, then a Linear head."""
    blocks: list[nn.Module] = []
    width = n_features
    for i in range(config.hidden_layers):
        # The first block flattens shaped inputs, (n, c, h, w) -> (n, c·h·w); so does the head.
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        layers += [
            nn.Linear(width, config.hidden_units),
            build_activation(config.activation),
        ]
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))  # inverted dropout: survivors x 1/(1-p)
        blocks.append(nn.Sequential(*layers))
        width = config.hidden_units
    return TrainerModel(nn.Sequential(), blocks, nn.Linear(width, n_outputs))


def build_model(config: TrainConfig, input_shape: Sequence[int], n_classes: int) -> TrainerModel:
    """The model for inputs of shape (n, *input_shape); an MLP flattens them."""
    n_features = 1
    for d in input_shape:
        n_features *= int(d)
    return build_mlp(config, n_features, n_classes)
