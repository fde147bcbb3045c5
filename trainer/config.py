"""The trainer's configuration: a frozen dataclass built from flat hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from trainer.params import PARAMS, ParamValue, check_param

T = TypeVar("T", float, int, str)


def _default(name: str, kind: type[T]) -> T:
    """The registry's default of parameter `name`; TypeError if it is not a `kind`."""
    value = PARAMS[name].default
    if not isinstance(value, kind):
        raise TypeError(f"PARAMS[{name!r}].default is {value!r}, not a {kind.__name__}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Each hyperparameter's default is the registry's
    (`trainer.params.PARAMS`), read here, never restated; the fields after them are set by
    whoever runs the training (the service: from the study's spec)."""

    lr: float = _default("lr", float)
    batch_size: int = _default("batch_size", int)
    optimizer: str = _default("optimizer", str)
    momentum: float = _default("momentum", float)
    dropout: float = _default("dropout", float)
    weight_decay: float = _default("weight_decay", float)
    weight_decay_mode: str = _default("weight_decay_mode", str)
    l1: float = _default("l1", float)
    beta1: float = _default("beta1", float)
    beta2: float = _default("beta2", float)
    eps: float = _default("eps", float)
    rmsprop_alpha: float = _default("rmsprop_alpha", float)
    rmsprop_momentum: float = _default("rmsprop_momentum", float)
    adadelta_rho: float = _default("adadelta_rho", float)
    lr_schedule: str = _default("lr_schedule", str)
    lr_decay_k: float = _default("lr_decay_k", float)
    lr_step_gamma: float = _default("lr_step_gamma", float)
    lr_step_every: int = _default("lr_step_every", int)
    lr_plateau_factor: float = _default("lr_plateau_factor", float)
    lr_plateau_patience: int = _default("lr_plateau_patience", int)
    grad_clip: str = _default("grad_clip", str)
    grad_clip_threshold: float = _default("grad_clip_threshold", float)
    early_stopping_patience: int = _default("early_stopping_patience", int)
    early_stopping_min_delta: float = _default("early_stopping_min_delta", float)
    hidden_layers: int = _default("hidden_layers", int)
    hidden_units: int = _default("hidden_units", int)
    activation: str = _default("activation", str)
    init: str = _default("init", str)
    init_std: float = _default("init_std", float)
    init_constant: float = _default("init_constant", float)
    leaky_relu_slope: float = _default("leaky_relu_slope", float)
    elu_alpha: float = _default("elu_alpha", float)
    batch_norm: str = _default("batch_norm", str)
    input_noise: float = _default("input_noise", float)
    augment: str = _default("augment", str)
    hidden_units_shrink: float = _default("hidden_units_shrink", float)
    conv_blocks: int = _default("conv_blocks", int)
    conv_channels: int = _default("conv_channels", int)
    kernel_size: int = _default("kernel_size", int)
    pooling: str = _default("pooling", str)
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
        """Build a config from searched + fixed values; missing ones take their defaults.

        Raises ValueError naming each unknown parameter and each illegal value.
        """
        errors = [f"{k}: {e}" for k, v in params.items() if (e := check_param(k, v)) is not None]
        if errors:
            raise ValueError("; ".join(errors))
        values: dict[str, Any] = {
            name: int(value) if PARAMS[name].kind == "int" else value  # 64.0 from JSON -> 64
            for name, value in params.items()
        }
        return cls(**values, max_epochs=max_epochs, seed=seed, monitor=monitor, family=family)
