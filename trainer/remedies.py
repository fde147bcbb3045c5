"""Remedies for diagnosis findings (TECHNIQUES.md §5, §8-9), mapped onto a study's space.

A remedy is a move on one hyperparameter ("raise dropout", "try activation leaky_relu")
rendered against what the study can do: "raise dropout (this trial 0.05; space allows up to
0.5)" when it is searched; when it is fixed or not searched, how to add it to the spec,
with the JSON to paste.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trainer.params import PARAMS, ParamValue

Direction = Literal["raise", "lower", "choose"]

# Nearer than this fraction of a range's width (in log space for log ranges) to an edge
# counts as "at" the edge: moving further needs a wider space.
EDGE_FRACTION = 0.05


@dataclass(frozen=True)
class Move:
    param: str
    direction: Direction
    why: str
    # The distribution to suggest when the parameter is not searched yet.
    suggest: dict[str, Any]
    prefer: tuple[str, ...] = ()  # for "choose": the values to try
    # Only when the trial's config has this key = one of these values (e.g. init_std only
    # matters for init=normal).
    when: tuple[str, tuple[ParamValue, ...]] | None = None


@dataclass(frozen=True)
class RemedyContext:
    config: Mapping[str, ParamValue] = field(default_factory=dict)
    space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fixed: Mapping[str, ParamValue] = field(default_factory=dict)
    max_epochs: int | None = None


def _f(low: float, high: float, log: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "float", "low": low, "high": high}
    if log:
        d["log"] = True
    return d


def _i(low: int, high: int, log: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "int", "low": low, "high": high}
    if log:
        d["log"] = True
    return d


def _c(*choices: ParamValue) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices)}


REGULARIZE = (
    Move("dropout", "raise", "dropout regularizes", _f(0.1, 0.5)),
    Move("weight_decay", "raise", "L2 shrinks weights", _f(1e-5, 1e-2, log=True)),
    Move("l1", "raise", "L1 drives weights to zero", _f(1e-6, 1e-3, log=True)),
    Move(
        "early_stopping_patience",
        "raise",
        "early stopping restores the best epoch",
        _i(3, 10),
    ),
    Move("input_noise", "raise", "input noise regularizes", _f(0.01, 0.3)),
    Move("hidden_units", "lower", "a smaller model has less variance", _i(16, 256, log=True)),
    Move("hidden_layers", "lower", "a smaller model has less variance", _i(1, 3)),
    Move(
        "augment",
        "choose",
        "augmentation adds data (image data only)",
        _c("none", "shift", "shift_rotate"),
        prefer=("shift", "shift_rotate"),
        when=("augment", ("none", "shift", "shift_rotate")),
    ),
)
CAPACITY = (
    Move("hidden_units", "raise", "more capacity", _i(64, 1024, log=True)),
    Move("hidden_layers", "raise", "more capacity", _i(2, 4)),
    Move("weight_decay", "lower", "less regularization", _f(1e-6, 1e-3, log=True)),
    Move("dropout", "lower", "less regularization", _f(0.0, 0.2)),
    Move("l1", "lower", "less regularization", _f(1e-7, 1e-5, log=True)),
    Move("lr", "raise", "a higher learning rate trains faster", _f(1e-3, 1e-1, log=True)),
)
STABILIZE = (
    Move("lr", "lower", "too high a learning rate diverges", _f(1e-4, 1e-1, log=True)),
    Move(
        "grad_clip",
        "choose",
        "clipping bounds each update",
        _c("none", "norm"),
        prefer=("norm",),
    ),
    Move(
        "batch_norm",
        "choose",
        "batch norm keeps activations in range",
        _c("none", "before"),
        prefer=("before", "after"),
    ),
)
INIT_AUTO = Move(
    "init",
    "choose",
    "He init for the ReLU family, Xavier for sigmoid/tanh",
    _c("auto", "he_normal", "xavier_normal"),
    prefer=("auto", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform"),
)

MOVES: dict[str, tuple[Move, ...]] = {
    "overfit": REGULARIZE,
    "underfit": CAPACITY,
    "diverged": (
        *STABILIZE,
        Move(
            "optimizer",
            "choose",
            "adaptive step sizes tolerate a poorly scaled lr",
            _c("sgd", "momentum", "adam"),
            prefer=("adam", "adamw"),
        ),
    ),
    "exploding_gradients": (
        STABILIZE[1],
        STABILIZE[0],
        INIT_AUTO,
        Move(
            "init_std",
            "lower",
            "a large init scale explodes",
            _f(1e-3, 1e-1, log=True),
            when=("init", ("normal",)),
        ),
        STABILIZE[2],
    ),
    "vanishing_gradients": (
        INIT_AUTO,
        Move(
            "activation",
            "choose",
            "non-saturating activations keep gradients alive",
            _c("relu", "leaky_relu", "elu"),
            prefer=("relu", "leaky_relu", "elu"),
        ),
        STABILIZE[2],
        Move("hidden_layers", "lower", "fewer layers, shorter gradient path", _i(1, 4)),
        Move(
            "init_std",
            "raise",
            "a tiny init scale shrinks gradients layer by layer",
            _f(1e-2, 1.0, log=True),
            when=("init", ("normal",)),
        ),
    ),
    "dead_units": (
        Move(
            "activation",
            "choose",
            "leaky ReLU and ELU have no zero-gradient region",
            _c("relu", "leaky_relu", "elu"),
            prefer=("leaky_relu", "elu"),
        ),
        Move("lr", "lower", "large steps knock units dead", _f(1e-4, 1e-2, log=True)),
        INIT_AUTO,
        STABILIZE[2],
    ),
    "oscillating": (
        Move("lr", "lower", "smaller steps stop the zig-zag", _f(1e-4, 1e-2, log=True)),
        Move("batch_size", "raise", "larger batches average out noise", _c(64, 128, 256)),
    ),
    "still_improving": (
        Move("lr", "raise", "a higher learning rate converges sooner", _f(1e-3, 1e-1, log=True)),
    ),
    "unrepresentative_validation": (),
    "good_fit": (),
}


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _snippet(param: str, dist: Mapping[str, Any]) -> str:
    return json.dumps({param: dist})


def _at_edge(value: float, dist: Mapping[str, Any], edge: str) -> bool:
    low, high = float(dist["low"]), float(dist["high"])
    if dist.get("log") and low > 0 and value > 0:
        low, high, value = math.log(low), math.log(high), math.log(value)
    width = high - low
    if edge == "high":
        return value >= high - EDGE_FRACTION * width
    return value <= low + EDGE_FRACTION * width


def widened(dist: Mapping[str, Any], edge: str, param: str) -> dict[str, Any]:
    d = dict(dist)
    spec = PARAMS.get(param)
    low, high = float(d["low"]), float(d["high"])
    if edge == "high":
        new = high * 10 if d.get("log") else high + (high - low)
        if spec is not None and spec.high is not None:
            new = min(new, spec.high * (0.99 if spec.high_open else 1.0))
        d["high"] = int(new) if d["type"] == "int" else new
    else:
        new = low / 10 if d.get("log") else max(low - (high - low), 0.0)
        if spec is not None and spec.low is not None:
            new = max(new, spec.low)
        d["low"] = int(new) if d["type"] == "int" else new
    return d


def _current(param: str, ctx: RemedyContext) -> ParamValue | None:
    if param in ctx.config:
        return ctx.config[param]
    spec = PARAMS.get(param)
    return None if spec is None else spec.default


def _used(param: str, value: ParamValue | None, ctx: RemedyContext) -> str:
    if value is None:
        return ""
    if param in ctx.config:
        return f"; this trial {_fmt(value)}, not searched"
    return f"; this trial used the default {_fmt(value)}"


def _render_numeric(move: Move, ctx: RemedyContext) -> str | None:
    p, verb = move.param, move.direction
    value = _current(p, ctx)
    if verb == "lower" and (value is None or value == 0):
        return None  # nothing to lower (e.g. dropout already 0, or an absent regularizer)
    dist = ctx.space.get(p)
    shown = "?" if value is None else _fmt(value)
    if dist is not None and dist.get("type") in ("float", "int"):
        edge = "high" if verb == "raise" else "low"
        bound = dist[edge]
        if isinstance(value, int | float) and _at_edge(float(value), dist, edge):
            return (
                f"{verb} {p} beyond the space ({move.why}): this trial's {shown} is at the "
                f"{'top' if edge == 'high' else 'bottom'} of space.{p}; widen it, e.g. "
                f"{_snippet(p, widened(dist, edge, p))}"
            )
        where = "up to" if verb == "raise" else "down to"
        return f"{verb} {p} ({move.why}; this trial {shown}; space allows {where} {_fmt(bound)})"
    if dist is not None and dist.get("type") == "categorical":
        choices = list(dist.get("choices", []))
        numeric = [c for c in choices if isinstance(c, int | float)]
        if isinstance(value, int | float):
            better = [c for c in numeric if (c > value if verb == "raise" else c < value)]
            if better:
                return (
                    f"{verb} {p} ({move.why}; this trial {shown}; space.{p} has "
                    f"{', '.join(map(_fmt, better))})"
                )
        which = "larger" if verb == "raise" else "smaller"
        return f"{verb} {p} ({move.why}): add {which} values to space.{p}.choices (now {choices})"
    if p in ctx.fixed:
        return (
            f"{verb} {p} ({move.why}; fixed at {shown} in this study): search it instead — "
            f"move it from fixed to space: {_snippet(p, move.suggest)}"
        )
    default = _used(p, value, ctx)
    return (
        f"{verb} {p} ({move.why}{default}): add it to the spec's space: {_snippet(p, move.suggest)}"
    )


def _render_choice(move: Move, ctx: RemedyContext) -> str | None:
    p = move.param
    value = _current(p, ctx)
    if value in move.prefer:
        return None
    shown = "?" if value is None else _fmt(value)
    dist = ctx.space.get(p)
    try_ = " or ".join(move.prefer[:2])
    if dist is not None and dist.get("type") == "categorical":
        choices = list(dist.get("choices", []))
        present = [c for c in move.prefer if c in choices]
        if present:
            return (
                f"try {p} {' or '.join(map(str, present[:2]))} ({move.why}; this trial "
                f"{shown}; in space.{p})"
            )
        return (
            f"try {p} {try_} ({move.why}; this trial {shown}): add "
            f"{move.prefer[0]} to space.{p}.choices (now {choices})"
        )
    if p in ctx.fixed:
        return (
            f"try {p} {try_} ({move.why}; fixed at {shown}): set "
            f'"fixed": {{"{p}": "{move.prefer[0]}"}} or search it: {_snippet(p, move.suggest)}'
        )
    default = _used(p, value, ctx)
    return (
        f"try {p} {try_} ({move.why}{default}): add it to the spec's space: "
        f"{_snippet(p, move.suggest)}"
    )


def _text_remedies(kind: str, ctx: RemedyContext) -> list[str]:
    epochs = "" if ctx.max_epochs is None else f" (this study {ctx.max_epochs})"
    if kind == "overfit":
        return [
            "more training data: run the data-size learning curve "
            "(POST /api/studies/{id}/learning-curve) to see whether it would help"
        ]
    if kind == "underfit":
        return [f"train longer: raise objective.max_epochs{epochs}"]
    if kind == "still_improving":
        return [f"train longer: raise objective.max_epochs{epochs}"]
    if kind == "unrepresentative_validation":
        return [
            "raise dataset.val_fraction: a larger validation split is less noisy",
            "check that validation comes from the same distribution as training "
            "(splits here are stratified; for uploaded data, shuffle before splitting)",
        ]
    if kind == "vanishing_gradients":
        return ["residual paths would shorten the gradient path (not in the mlp family)"]
    return []


def remedies_for(kind: str, ctx: RemedyContext) -> list[str]:
    out: list[str] = []
    for move in MOVES.get(kind, ()):
        if move.when is not None:
            key, values = move.when
            # Only where the study uses it (augment: image data; init_std: init=normal).
            if ctx.config.get(key) not in values and key not in ctx.space:
                continue
        if move.direction == "choose":
            text = _render_choice(move, ctx)
        else:
            text = _render_numeric(move, ctx)
        if text is not None:
            out.append(text)
    return out + _text_remedies(kind, ctx)
