"""Model builders."""

from __future__ import annotations

from torch import nn

from trainer.config import TrainConfig


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


def build_mlp(config: TrainConfig, n_features: int, n_outputs: int) -> nn.Sequential:
    """[Linear -> activation -> Dropout] x hidden_layers -> Linear (logits)."""
    layers: list[nn.Module] = []
    width = n_features
    for _ in range(config.hidden_layers):
        layers.append(nn.Linear(width, config.hidden_units))
        layers.append(build_activation(config.activation))
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))  # inverted dropout: survivors x 1/(1-p)
        width = config.hidden_units
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)
