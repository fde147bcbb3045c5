"""The trainer's hyperparameters: names, types, domains and defaults.

This registry is the single source of truth for "which parameters exist and which values
are legal"; the service validates study specs against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ParamValue = float | int | str
ParamKind = Literal["float", "int", "categorical"]

OPTIMIZERS = (
    "sgd",
    "momentum",
    "nesterov",
    "adam",
    "adamw",
    "nadam",
    "rmsprop",
    "adagrad",
    "adadelta",
)
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
LR_SCHEDULES = ("none", "exponential", "step", "inverse_time", "reduce_on_plateau")
GRAD_CLIPS = ("none", "value", "norm")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "elu")
INITS = (
    "auto",
    "default",
    "zeros",
    "constant",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "he_uniform",
    "he_normal",
)
BATCH_NORM = ("none", "before", "after")
AUGMENTS = ("none", "shift", "shift_rotate")
POOLINGS = ("max", "avg", "none")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: ParamKind
    default: ParamValue
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is not allowed
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def check(self, value: object) -> str | None:
        """Return why `value` is not legal for this parameter, or None when it is."""
        if self.kind == "categorical":
            if not isinstance(value, str) or value not in self.choices:
                return f"must be one of {list(self.choices)}, got {value!r}"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be finite, got {value!r}"
        if self.kind == "int" and isinstance(value, float) and not value.is_integer():
            return f"must be an integer, got {value!r}"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            op = ">" if self.low_open else ">="
            return f"must be {op} {self.low:g}, got {value!r}"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            op = "<" if self.high_open else "<="
            return f"must be {op} {self.high:g}, got {value!r}"
        return None

    def domain(self) -> str:
        if self.kind == "categorical":
            return f"one of {list(self.choices)}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{self.kind} in {left}{low}, {high}{right}"


# Model and input parameters (initialization, activations' shapes, batch norm, input noise,
# augmentation, layer widths and the cnn family); see trainer/model.py.
MODEL_PARAMS = (
    ParamSpec(
        "init",
        "categorical",
        "auto",
        "weight initialization (auto: He for the ReLU family, Xavier for sigmoid/tanh)",
        choices=INITS,
    ),
    ParamSpec(
        "init_std",
        "float",
        0.01,
        "standard deviation of init=normal",
        low=0.0,
        low_open=True,
        high=10.0,
    ),
    ParamSpec("init_constant", "float", 0.1, "weight value of init=constant", low=-10, high=10),
    ParamSpec(
        "leaky_relu_slope",
        "float",
        0.01,
        "slope of leaky_relu for z < 0",
        low=0.0,
        high=1.0,
        high_open=True,
    ),
    ParamSpec(
        "elu_alpha", "float", 1.0, "alpha of elu: alpha·(exp(z) - 1) for z < 0", low=0.0, high=10.0
    ),
    ParamSpec(
        "batch_norm",
        "categorical",
        "none",
        "batch normalization before or after each hidden activation",
        choices=BATCH_NORM,
    ),
    ParamSpec(
        "input_noise", "float", 0.0, "std of Gaussian input noise (training only)", low=0, high=10
    ),
    ParamSpec(
        "augment",
        "categorical",
        "none",
        "random shifts (and small rotations) of image inputs, training only",
        choices=AUGMENTS,
    ),
    ParamSpec(
        "hidden_units_shrink",
        "float",
        1.0,
        "width of dense hidden layer i = hidden_units·shrinkⁱ (1: all equal)",
        low=0.0,
        low_open=True,
        high=1.0,
    ),
    ParamSpec("conv_blocks", "int", 2, "cnn: convolution blocks", low=1, high=12),
    ParamSpec(
        "conv_channels", "int", 32, "cnn: channels of the first block (doubling)", low=1, high=512
    ),
    ParamSpec("kernel_size", "int", 3, "cnn: convolution kernel size", low=1, high=15),
    ParamSpec("pooling", "categorical", "max", "cnn: 2x pooling per block", choices=POOLINGS),
)

PARAMS: dict[str, ParamSpec] = {
    p.name: p
    for p in (
        ParamSpec("lr", "float", 1e-3, "learning rate η", low=0.0, low_open=True, high=10.0),
        ParamSpec("batch_size", "int", 64, "mini-batch size", low=1, high=65536),
        ParamSpec("optimizer", "categorical", "adam", "update rule", choices=OPTIMIZERS),
        ParamSpec(
            "momentum",
            "float",
            0.9,
            "β of momentum and nesterov",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        ParamSpec(
            "dropout",
            "float",
            0.0,
            "drop probability p of hidden units",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        ParamSpec(
            "weight_decay",
            "float",
            0.0,
            "L2 strength λ (cost + λ·ΣW², weights only)",
            low=0.0,
            high=10.0,
        ),
        ParamSpec(
            "weight_decay_mode",
            "categorical",
            "coupled",
            "coupled: λ·ΣW² in the cost; decoupled: θ <- θ - η·λ·θ outside the optimizer step",
            choices=WEIGHT_DECAY_MODES,
        ),
        ParamSpec(
            "l1", "float", 0.0, "L1 strength λ (cost + λ·Σ|W|, weights only)", low=0.0, high=10.0
        ),
        ParamSpec(
            "beta1", "float", 0.9, "β₁ of adam, adamw, nadam", low=0.0, high=1.0, high_open=True
        ),
        ParamSpec(
            "beta2", "float", 0.999, "β₂ of adam, adamw, nadam", low=0.0, high=1.0, high_open=True
        ),
        ParamSpec(
            "eps",
            "float",
            1e-8,
            "ε in the denominator of adam, adamw, nadam, rmsprop, adagrad",
            low=0.0,
            low_open=True,
            high=1.0,
        ),
        ParamSpec(
            "rmsprop_alpha",
            "float",
            0.99,
            "decay alpha of rmsprop's mean square",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        ParamSpec(
            "rmsprop_momentum",
            "float",
            0.0,
            "momentum of rmsprop",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        ParamSpec(
            "adadelta_rho",
            "float",
            0.9,
            "decay rho of adadelta's running averages",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        ParamSpec(
            "lr_schedule", "categorical", "none", "per-epoch learning rate", choices=LR_SCHEDULES
        ),
        ParamSpec(
            "lr_decay_k",
            "float",
            0.1,
            "k of exponential η0·e^(-k·t) and inverse_time η0/(1+k·t)",
            low=0.0,
            high=100.0,
        ),
        ParamSpec(
            "lr_step_gamma",
            "float",
            0.5,
            "step schedule: multiply η by gamma every lr_step_every epochs",
            low=0.0,
            low_open=True,
            high=1.0,
        ),
        ParamSpec(
            "lr_step_every", "int", 10, "step schedule: epochs between steps", low=1, high=10000
        ),
        ParamSpec(
            "lr_plateau_factor",
            "float",
            0.1,
            "reduce_on_plateau: η <- factor·η",
            low=0.0,
            low_open=True,
            high=1.0,
            high_open=True,
        ),
        ParamSpec(
            "lr_plateau_patience",
            "int",
            5,
            "reduce_on_plateau: epochs without improvement before reducing",
            low=0,
            high=10000,
        ),
        ParamSpec("grad_clip", "categorical", "none", "gradient clipping", choices=GRAD_CLIPS),
        ParamSpec(
            "grad_clip_threshold",
            "float",
            1.0,
            "clip value c (each element to [-c, c]) or max global L2 norm",
            low=0.0,
            low_open=True,
            high=1e6,
        ),
        ParamSpec(
            "early_stopping_patience",
            "int",
            0,
            "epochs without improvement of the objective before stopping (0 = off)",
            low=0,
            high=10000,
        ),
        ParamSpec(
            "early_stopping_min_delta",
            "float",
            0.0,
            "smallest change of the objective that counts as an improvement",
            low=0.0,
        ),
        ParamSpec("hidden_layers", "int", 2, "number of hidden layers", low=0, high=32),
        ParamSpec("hidden_units", "int", 128, "units per hidden layer", low=1, high=8192),
        ParamSpec("activation", "categorical", "relu", "hidden activation", choices=ACTIVATIONS),
        *MODEL_PARAMS,
    )
}


def check_param(name: str, value: object) -> str | None:
    spec = PARAMS.get(name)
    if spec is None:
        return f"unknown parameter {name!r}; known: {sorted(PARAMS)}"
    return spec.check(value)
