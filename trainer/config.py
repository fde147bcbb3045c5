"""The trainer's configuration: a frozen dataclass built from flat hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.params import PARAMS, ParamValue, check_param


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    momentum: float = 0.9
    dropout: float = 0.0
    weight_decay: float = 0.0
    weight_decay_mode: str = "coupled"
    l1: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    rmsprop_alpha: float = 0.99
    rmsprop_momentum: float = 0.0
    adadelta_rho: float = 0.9
    lr_schedule: str = "none"
    lr_decay_k: float = 0.1
    lr_step_gamma: float = 0.5
    lr_step_every: int = 10
    lr_plateau_factor: float = 0.1
    lr_plateau_patience: int = 5
    grad_clip: str = "none"
    grad_clip_threshold: float = 1.0
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    hidden_layers: int = 2
    hidden_units: int = 128
    activation: str = "relu"
    init: str = "auto"
    init_std: float = 0.01
    init_constant: float = 0.1
    leaky_relu_slope: float = 0.01
    elu_alpha: float = 1.0
    batch_norm: str = "none"
    input_noise: float = 0.0
    augment: str = "none"
    hidden_units_shrink: float = 1.0
    conv_blocks: int = 2
    conv_channels: int = 32
    kernel_size: int = 3
    pooling: str = "max"
    family: str = "mlp"  # the spec's model.family, not a searchable parameter
    max_epochs: int = 20
    seed: int = 0
    # Not hyperparameters: what the objective watches (early stopping, reduce_on_plateau)
    # and whether per-layer gradient telemetry is recorded.
    monitor: str = "val_loss"
    telemetry: bool = True

    @classmethod
    def from_params(
        cls,
        params: dict[str, ParamValue],
        *,
        max_epochs: int,
        seed: int = 0,
        monitor: str = "val_loss",
        family: str = "mlp",
    ) -> TrainConfig:
        """Build a config from searched + fixed values; missing ones take their defaults."""
        errors = [f"{k}: {e}" for k, v in params.items() if (e := check_param(k, v)) is not None]
        if errors:
            raise ValueError("; ".join(errors))
        values: dict[str, Any] = {name: spec.default for name, spec in PARAMS.items()}
        values.update(params)
        for name, spec in PARAMS.items():
            if spec.kind == "int":
                values[name] = int(values[name])  # 64.0 from JSON -> 64
        return cls(**values, max_epochs=max_epochs, seed=seed, monitor=monitor, family=family)
