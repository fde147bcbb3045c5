"""Remedies for diagnosis findings, rendered against the study's own spec.

The trainer says which hyperparameter moves help a finding (`trainer.advice.MOVES`); here a
move becomes a sentence about this study: "raise dropout (this trial 0.05; space allows up
to 0.5)" when the parameter is searched; at the edge of its range, how to widen it; when it
is fixed or not searched, how to add it to the spec, with the JSON to paste.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.studies.spec import CategoricalDist, FloatDist, IntDist, StudySpec
from trainer.advice import Choices, Move, Range, moves_for
from trainer.detectors import EvidenceValue
from trainer.diagnosis import Finding
from trainer.params import PARAMS, ParamValue

NumericDist = FloatDist | IntDist
# Nearer than this fraction of a range's width (in log space for log ranges) to an edge
# counts as "at" the edge: moving further needs a wider space.
EDGE_FRACTION = 0.05


@dataclass(frozen=True)
class RemedyContext:
    """What remedies are rendered against: one trial's values (searched + fixed) and its
    study's spec."""

    config: Mapping[str, ParamValue]
    spec: StudySpec


def with_remedies(findings: list[Finding], ctx: RemedyContext) -> list[dict[str, Any]]:
    """The stored and served form of findings: `{kind, severity, evidence, remedies}`."""
    return [{**f.to_dict(), "remedies": remedies_for(f.kind, ctx, f.evidence)} for f in findings]


def remedies_for(
    kind: str, ctx: RemedyContext, evidence: Mapping[str, EvidenceValue] | None = None
) -> list[str]:
    """Remedy sentences for a finding of `kind` with its `evidence`, most promising first."""
    evidence = {} if evidence is None else evidence
    out: list[str] = _early_stop_fact(kind, ctx, evidence)
    for move in moves_for(kind, evidence):
        if move.when is not None:
            key, values = move.when
            # Only where the study uses it (augment: image data; init_std: init=normal).
            if ctx.config.get(key) not in values and key not in ctx.spec.space:
                continue
        if move.direction == "choose":
            text = _render_choice(move, ctx)
        else:
            text = _render_numeric(move, ctx)
        if text is not None:
            out.append(text)
    return out + _text_remedies(kind, ctx, evidence)


def distribution(suggestion: Range | Choices) -> dict[str, Any]:
    """A suggestion as a spec `space` entry."""
    if isinstance(suggestion, Choices):
        return {"type": "categorical", "choices": list(suggestion.values)}
    d: dict[str, Any] = {"type": suggestion.kind, "low": suggestion.low, "high": suggestion.high}
    if suggestion.log:
        d["log"] = True
    return d


def widened(dist: NumericDist, edge: str, param: str) -> dict[str, Any]:
    """`dist` as written in the spec, with its `edge` ("low" or "high") pushed out (10x on
    a log range, one width otherwise), but never past the parameter's own limit."""
    d = dist.model_dump(exclude_defaults=True)  # as written: no "step": null from a reload
    spec = PARAMS.get(param)
    low, high = float(dist.low), float(dist.high)
    if edge == "high":
        new = high * 10 if dist.log else high + (high - low)
        if spec is not None and spec.high is not None:
            new = min(new, spec.high * (0.99 if spec.high_open else 1.0))
        d["high"] = int(new) if dist.type == "int" else new
    else:
        new = low / 10 if dist.log else max(low - (high - low), 0.0)
        if spec is not None and spec.low is not None:
            new = max(new, spec.low)
        d["low"] = int(new) if dist.type == "int" else new
    return d


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _snippet(param: str, dist: Mapping[str, Any]) -> str:
    return json.dumps({param: dist})


def _at_edge(value: float, dist: NumericDist, edge: str) -> bool:
    low, high = float(dist.low), float(dist.high)
    if dist.log and low > 0 and value > 0:
        low, high, value = math.log(low), math.log(high), math.log(value)
    width = high - low
    if edge == "high":
        return value >= high - EDGE_FRACTION * width
    return value <= low + EDGE_FRACTION * width


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
    dist = ctx.spec.space.get(p)
    shown = "?" if value is None else _fmt(value)
    suggest = _snippet(p, distribution(move.suggest))
    if isinstance(dist, FloatDist | IntDist):
        edge = "high" if verb == "raise" else "low"
        bound = dist.high if edge == "high" else dist.low
        if isinstance(value, int | float) and _at_edge(float(value), dist, edge):
            return (
                f"{verb} {p} beyond the space ({move.why}): this trial's {shown} is at the "
                f"{'top' if edge == 'high' else 'bottom'} of space.{p}; widen it, e.g. "
                f"{_snippet(p, widened(dist, edge, p))}"
            )
        where = "up to" if verb == "raise" else "down to"
        return f"{verb} {p} ({move.why}; this trial {shown}; space allows {where} {_fmt(bound)})"
    if isinstance(dist, CategoricalDist):
        choices = list(dist.choices)
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
    if p in ctx.spec.fixed:
        return (
            f"{verb} {p} ({move.why}; fixed at {shown} in this study): search it instead — "
            f"move it from fixed to space: {suggest}"
        )
    return f"{verb} {p} ({move.why}{_used(p, value, ctx)}): add it to the spec's space: {suggest}"


def _render_choice(move: Move, ctx: RemedyContext) -> str | None:
    p = move.param
    value = _current(p, ctx)
    if value in move.prefer:
        return None
    shown = "?" if value is None else _fmt(value)
    dist = ctx.spec.space.get(p)
    try_ = " or ".join(move.prefer[:2])
    suggest = _snippet(p, distribution(move.suggest))
    if isinstance(dist, CategoricalDist):
        choices = list(dist.choices)
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
    if p in ctx.spec.fixed:
        return (
            f"try {p} {try_} ({move.why}; fixed at {shown}): set "
            f'"fixed": {{"{p}": "{move.prefer[0]}"}} or search it: {suggest}'
        )
    return (
        f"try {p} {try_} ({move.why}{_used(p, value, ctx)}): add it to the spec's space: {suggest}"
    )


def _early_stop_fact(
    kind: str, ctx: RemedyContext, evidence: Mapping[str, EvidenceValue]
) -> list[str]:
    """What early stopping would have done to this trial (replayed on its own curve), when
    it trained on past its best epoch without it."""
    if kind not in ("overfit", "inconclusive") or "early_stop_at_epoch" not in evidence:
        return []
    metric = ctx.spec.objective.metric
    return [
        f"stop early: {metric} was best at epoch {evidence['early_stop_keeps_epoch']} of "
        f"{evidence.get('epochs_run', '?')}; with early_stopping_patience "
        f"{evidence['early_stop_patience']} this trial would have stopped at epoch "
        f"{evidence['early_stop_at_epoch']} and kept epoch "
        f"{evidence['early_stop_keeps_epoch']}'s weights"
    ]


def _text_remedies(
    kind: str, ctx: RemedyContext, evidence: Mapping[str, EvidenceValue]
) -> list[str]:
    epochs = f" (this study {ctx.spec.objective.max_epochs})"
    more_data = (
        "more training data: run the data-size learning curve "
        "(POST /api/studies/{id}/learning-curve) to see whether it would help"
    )
    if kind == "overfit":
        return [more_data]
    if kind == "inconclusive":
        leans = evidence.get("leans")
        if leans == "variance":
            return [more_data]
        return [f"train longer: raise objective.max_epochs{epochs}"]
    if kind in ("underfit", "still_improving"):
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
