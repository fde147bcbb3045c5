"""Model builders: the `mlp` and `cnn` families.

Every model is a `TrainerModel`: parameter-free input transforms that act in training mode
only (`inputs`: Gaussian input noise, image augmentation), hidden `blocks` that each hold
exactly one weight layer (Linear or Conv), and the output `head` (a Linear producing
logits). Transfer learning reuses `blocks[:k]` and replaces `head`; gradient telemetry
walks `weight_layers(model)`.

A hidden block is, in forward order (BN = batch norm, optional and placed per `batch_norm`):

    mlp:  [Flatten] -> Linear -> [BN before] -> activation -> [BN after] -> [Dropout]
    cnn:  [add channel] -> Conv -> [BN before] -> activation -> [BN after] -> [Pool] -> [Dropout]

The weight layer has no bias when a BN follows it directly (`before`): BN's β replaces it.
A `cnn` is `conv_blocks` conv blocks (block i has conv_channels·2ⁱ channels, at most 512;
"same" padding; 2x pooling while a side is at least 2), then `hidden_layers` dense blocks
as in the mlp, then the head. An `mlp`'s dense block i has hidden_units·hidden_units_shrinkⁱ
units (rounded, at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.initialization import init_weights
from trainer.layers import BatchNorm1d, GaussianNoise, build_augment

Layout = Literal["auto", "tabular", "signal", "image"]
MAX_CONV_CHANNELS = 512
FAMILIES = ("mlp", "cnn")


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


WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def weight_layers(model: TrainerModel) -> list[nn.Module]:
    """The weight layers in forward order: one per block, then the head."""
    layers: list[nn.Module] = []
    for block in model.blocks:
        found = [m for m in block.modules() if isinstance(m, WEIGHT_LAYERS)]
        if len(found) != 1:
            raise ValueError(f"a block must hold exactly one weight layer, found {len(found)}")
        layers.append(found[0])
    layers.append(model.head)
    return layers


def build_activation(name: str, *, slope: float = 0.01, alpha: float = 1.0) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)  # z for z >= 0, slope·z below
    if name == "elu":
        return nn.ELU(alpha)  # z for z > 0, alpha·(exp(z) - 1) below
    raise ValueError(f"unknown activation {name!r}")


def _activation(config: TrainConfig) -> nn.Module:
    return build_activation(
        config.activation, slope=config.leaky_relu_slope, alpha=config.elu_alpha
    )


def _batch_norm(kind: str, features: int) -> nn.Module:
    return nn.BatchNorm2d(features) if kind == "2d" else BatchNorm1d(features)


def _block(
    config: TrainConfig,
    weight: nn.Module,
    kind: Literal["dense", "1d", "2d"],
    features: int,
    *,
    prefix: Sequence[nn.Module] = (),
    pool: nn.Module | None = None,
) -> nn.Sequential:
    """prefix -> weight -> [BN before] -> activation -> [BN after] -> [pool] -> [dropout]."""
    layers = [*prefix, weight]
    if config.batch_norm == "before":
        layers.append(_batch_norm(kind, features))
    layers.append(_activation(config))
    if config.batch_norm == "after":
        layers.append(_batch_norm(kind, features))
    if pool is not None:
        layers.append(pool)
    if config.dropout > 0:
        layers.append(nn.Dropout(config.dropout))  # inverted dropout: survivors x 1/(1-p)
    return nn.Sequential(*layers)


def dense_widths(config: TrainConfig) -> list[int]:
    return [
        max(1, round(config.hidden_units * config.hidden_units_shrink**i))
        for i in range(config.hidden_layers)
    ]


def _dense_blocks(config: TrainConfig, n_features: int) -> tuple[list[nn.Module], int]:
    """The dense blocks on flattened inputs of `n_features`; returns them and the last width."""
    blocks: list[nn.Module] = []
    width = n_features
    bias = config.batch_norm != "before"
    for i, units in enumerate(dense_widths(config)):
        # The first block flattens shaped inputs, (n, c, h, w) -> (n, c·h·w); so does the head.
        prefix = [nn.Flatten()] if i == 0 else []
        blocks.append(
            _block(config, nn.Linear(width, units, bias=bias), "dense", units, prefix=prefix)
        )
        width = units
    return blocks, width


def build_inputs(config: TrainConfig, input_shape: Sequence[int], layout: Layout) -> nn.Sequential:
    """Training-only transforms: augmentation (images only), then Gaussian input noise."""
    transforms: list[nn.Module] = []
    if config.augment != "none":
        if _resolve_layout(input_shape, layout) != "image":
            raise ValueError(
                f"augment: {config.augment!r} needs image inputs (n, h, w) or (n, c, h, w), "
                f"got samples shaped {tuple(input_shape)} ({layout}); use augment: none"
            )
        augment = build_augment(config.augment, min(int(d) for d in input_shape[-2:]))
        assert augment is not None
        transforms.append(augment)
    if config.input_noise > 0:
        transforms.append(GaussianNoise(config.input_noise))
    return nn.Sequential(*transforms)


def build_mlp(
    config: TrainConfig, n_features: int, n_outputs: int, inputs: nn.Sequential | None = None
) -> TrainerModel:
    """Dense blocks x hidden_layers, then a Linear head (not initialized; see build_model)."""
    blocks, width = _dense_blocks(config, n_features)
    return TrainerModel(inputs or nn.Sequential(), blocks, nn.Linear(width, n_outputs))


def _resolve_layout(input_shape: Sequence[int], layout: Layout) -> str:
    """auto: (length,) is a signal, (h, w) and (c, h, w) are images; anything else tabular."""
    if layout != "auto":
        return layout
    return {1: "signal", 2: "image", 3: "image"}.get(len(input_shape), "tabular")


def conv_geometry(
    input_shape: Sequence[int], layout: Layout
) -> tuple[Literal["1d", "2d"], int, list[int], bool]:
    """(conv kind, input channels, spatial sizes, needs a channel axis) for a sample shape.

    Conv1d: (length,) or (channels, length) with layout signal. Conv2d: (h, w) or (c, h, w).
    """
    shape = [int(d) for d in input_shape]
    kind = _resolve_layout(shape, layout)
    if kind in ("signal", "tabular") and len(shape) in (1, 2):
        return ("1d", 1, shape, True) if len(shape) == 1 else ("1d", shape[0], shape[1:], False)
    if kind == "image" and len(shape) in (2, 3):
        return ("2d", 1, shape, True) if len(shape) == 2 else ("2d", shape[0], shape[1:], False)
    raise ValueError(
        f"family cnn: cannot convolve samples shaped {tuple(shape)} ({kind}); expected "
        "(length,) or (channels, length) for signals, (h, w) or (c, h, w) for images"
    )


def build_cnn(
    config: TrainConfig, input_shape: Sequence[int], n_outputs: int, layout: Layout = "auto"
) -> TrainerModel:
    kind, channels, spatial, add_channel = conv_geometry(input_shape, layout)
    conv_cls = nn.Conv1d if kind == "1d" else nn.Conv2d
    pool_cls: dict[str, type[nn.Module]] = (
        {"max": nn.MaxPool1d, "avg": nn.AvgPool1d}
        if kind == "1d"
        else {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
    )
    blocks: list[nn.Module] = []
    for i in range(config.conv_blocks):
        out = min(config.conv_channels * 2**i, MAX_CONV_CHANNELS)
        conv = conv_cls(
            channels,
            out,
            config.kernel_size,
            padding="same",
            bias=config.batch_norm != "before",
        )
        pool: nn.Module | None = None
        if config.pooling != "none" and min(spatial) >= 2:
            pool = pool_cls[config.pooling](2)
            spatial = [s // 2 for s in spatial]
        prefix = [nn.Unflatten(1, (1, int(input_shape[0])))] if i == 0 and add_channel else []
        blocks.append(_block(config, conv, kind, out, prefix=prefix, pool=pool))
        channels = out
    n_features = channels
    for s in spatial:
        n_features *= s
    dense, width = _dense_blocks(config, n_features)
    inputs = build_inputs(config, input_shape, layout)
    return TrainerModel(inputs, [*blocks, *dense], nn.Linear(width, n_outputs))


def build_model(
    config: TrainConfig,
    input_shape: Sequence[int],
    n_classes: int,
    *,
    layout: Layout = "auto",
) -> TrainerModel:
    """The `config.family` model for inputs of shape (n, *input_shape), initialized per
    `config.init`. An mlp flattens shaped inputs; `layout` tells a cnn whether 2-D samples
    are (channels, length) signals or (h, w) images (auto: images)."""
    if config.family == "mlp":
        n_features = 1
        for d in input_shape:
            n_features *= int(d)
        model = build_mlp(config, n_features, n_classes, build_inputs(config, input_shape, layout))
    elif config.family == "cnn":
        model = build_cnn(config, input_shape, n_classes, layout)
    else:
        raise ValueError(f"model.family: unknown {config.family!r}; known: {list(FAMILIES)}")
    init_weights(weight_layers(model), config)
    return model


def config_warnings(config: TrainConfig) -> list[str]:
    """Known bad combinations in a configuration; the trial still runs (stored with it)."""
    warnings: list[str] = []
    n_blocks = config.hidden_layers + (config.conv_blocks if config.family == "cnn" else 0)
    if config.batch_norm != "none" and config.dropout > 0 and n_blocks >= 2:
        warnings.append(
            f"dropout (p={config.dropout:g}) comes before batch normalization: block i's "
            "dropout feeds block i+1's batch norm, whose running variance then differs "
            "between training and evaluation (variance shift); use dropout only after the "
            "last batch-norm layer, or one of the two"
        )
    if config.batch_norm != "none" and n_blocks == 0:
        warnings.append("batch_norm has no effect: the model has no hidden layers")
    if config.init in ("zeros", "constant"):
        warnings.append(
            f"init={config.init}: all units of a layer start equal and get equal updates, so "
            "they never become different (symmetry is not broken); a teaching baseline only"
        )
    return warnings
