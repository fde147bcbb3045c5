"""Weight initialization schemes (TECHNIQUES.md §2), applied to every weight layer.

fan_in / fan_out of a Linear(in, out) are in / out; of a Conv with kernel k they are
in_channels·k and out_channels·k (k = product of the kernel's sides).

| init           | weights                                       | biases        |
| zeros          | 0                                             | 0             |
| constant       | init_constant                                 | 0             |
| normal         | N(0, init_std²)                               | 0             |
| xavier_uniform | U[-√(6/(fan_in+fan_out)), +√(6/(fan_in+fan_out))] | 0         |
| xavier_normal  | N(0, 2/(fan_in+fan_out))                      | 0             |
| he_uniform     | U[-√(6/fan_in), +√(6/fan_in)]                 | 0             |
| he_normal      | N(0, 2/fan_in)                                | 0             |
| default        | PyTorch's own (Kaiming-uniform variant, bound 1/√fan_in) | PyTorch's |
| auto           | he_normal for relu/leaky_relu/elu, xavier_normal for sigmoid/tanh | 0 |

`auto` is the default: it keeps the behaviour of the framework default sensible for deep
nets (variance-preserving for the chosen activation) while small nets train as before.
The head (output layer) gets the same scheme as the hidden layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.config import TrainConfig

RELU_FAMILY = ("relu", "leaky_relu", "elu")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear or Conv weight (out, in, *kernel)."""
    receptive = math.prod(weight.shape[2:]) if weight.ndim > 2 else 1
    return int(weight.shape[1]) * receptive, int(weight.shape[0]) * receptive


def resolve_init(config: TrainConfig) -> str:
    """The concrete scheme: `auto` becomes he_normal or xavier_normal by activation."""
    if config.init != "auto":
        return config.init
    return "he_normal" if config.activation in RELU_FAMILY else "xavier_normal"


@torch.no_grad()
def init_layer(layer: nn.Module, scheme: str, *, std: float = 0.01, constant: float = 0.1) -> None:
    """Initialize one Linear/Conv layer in place per `scheme` (not `auto`)."""
    weight = layer.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} has no weight tensor")
    if scheme == "default":
        if not isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d):
            raise TypeError(f"init default: {type(layer).__name__} is not Linear or Conv")
        layer.reset_parameters()
        return
    fan_in, fan_out = fans(weight)
    if scheme == "zeros":
        weight.zero_()
    elif scheme == "constant":
        weight.fill_(constant)
    elif scheme == "normal":
        weight.normal_(0.0, std)
    elif scheme == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        weight.uniform_(-bound, bound)
    elif scheme == "xavier_normal":
        weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
    elif scheme == "he_uniform":
        bound = math.sqrt(6.0 / fan_in)
        weight.uniform_(-bound, bound)
    elif scheme == "he_normal":
        weight.normal_(0.0, math.sqrt(2.0 / fan_in))
    else:
        raise ValueError(f"init: unknown scheme {scheme!r}")
    bias = getattr(layer, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.zero_()


def init_weights(layers: list[nn.Module], config: TrainConfig) -> None:
    """Apply the config's scheme to each weight layer (blocks' and the head)."""
    scheme = resolve_init(config)
    for layer in layers:
        init_layer(layer, scheme, std=config.init_std, constant=config.init_constant)
