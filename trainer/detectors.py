"""Detectors of trainer.diagnosis: each reads one picture in a trial's curves (TECHNIQUES.md
§8-9) and returns its evidence (numbers, by name), or {} when the picture is not there. The
fit verdict (over/underfit, good fit, inconclusive) is trainer.fit_verdict.

Every threshold is a named constant with the reason for its value. Pure Python: no torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainer.curve_stats import (
    finite,
    layer_series,
    median,
    relative_jump,
    rounded,
    sign_flip_fraction,
    slope,
    variance,
)

EvidenceValue = float | int | str
Evidence = dict[str, EvidenceValue]

# ---- thresholds --------------------------------------------------------------------------
# Trends are read over the last TAIL epochs: long enough to average out one noisy epoch,
# short enough to describe the end of a 20-epoch run.
TAIL_EPOCHS = 5
# Below this many epochs there is no shape to read; only hard failures are reported.
MIN_EPOCHS = 3

# Diverged: a finite loss that grew this many times above its minimum is "growing by orders
# of magnitude" (TECHNIQUES §9) — no healthy run ever ends 10x above its own best loss.
DIVERGE_GROWTH = 10.0
# Diverged: a training loss this many times chance level ln(n_classes) (regression: 10 times
# the target's variance). Even a first epoch ends near or below chance; 10x above it means
# the updates blew the outputs up.
DIVERGE_CHANCE_MULTIPLE = 10.0
# Error texts of a trial that stopped on a non-finite loss (trainer.DivergedError).
DIVERGE_ERROR = re.compile(r"DivergedError|non-finite|\bnan\b|\binf\b", re.IGNORECASE)

# Oscillating: in the last OSC_WINDOW epochs, at least this fraction of successive changes of
# the training loss flip sign (a monotone or smoothly converging curve flips rarely) ...
OSC_WINDOW = 8
OSC_SIGN_FLIP_FRACTION = 0.6
# ... with a mean jump of at least this fraction of the loss level: jitter of a converged
# run (well under 5%) is not a zig-zag.
OSC_RELATIVE_JUMP = 0.15

# Unrepresentative validation: validation loss this far BELOW training loss (median over
# the tail) — with dropout and noise off at evaluation, train and val are measured alike.
UNREP_VAL_RATIO = 0.7
# ... or the validation loss jumps around this many times more than the training loss
# (relative mean jump), while the training loss is smooth.
UNREP_NOISE_RATIO = 4.0
UNREP_MIN_VAL_JUMP = 0.1

# Still improving: the validation loss fell by at least this fraction over the last
# TAIL_EPOCHS and its minimum is in the last STILL_IMPROVING_LAST_EPOCHS epochs.
STILL_IMPROVING_DROP = 0.02
STILL_IMPROVING_LAST_EPOCHS = 1

# Vanishing gradients: first weight layer's gradient norm this many times smaller than the
# last one's (median over epochs). Healthy nets stay within ~10x; 10 sigmoid layers give
# ~1e-6 (TECHNIQUES §3: slope <= 0.25 per layer).
VANISHING_RATIO = 1e-3
# Exploding gradients: first layer's norm this many times the last one's, or any layer's
# norm grew this many times from its first epoch, or any norm is non-finite.
EXPLODING_RATIO = 1e3
EXPLODING_GROWTH = 100.0

# Dead units: at least this fraction of a ReLU-family layer's units never fire on a
# validation batch at the end. A few dead units are normal; half is lost capacity.
DEAD_FRACTION = 0.5


@dataclass(frozen=True)
class TrialRun:
    """Everything diagnosis reads about one trial: its per-epoch curves by metric name
    (`train_loss`, `val_loss`, `train_accuracy`, `val_accuracy`, `grad_norm.<layer>`,
    `dead_fraction.<layer>`, ...), how it ended, its number of classes (chance level: loss
    ln K, error 1 - 1/K), its validation rows (the noise of the validation error), its epoch
    budget, the metric early stopping watches (`monitor`, the study's objective) and, when
    early stopping restored the best epoch's weights, that epoch (`kept_epoch`, 1-based)."""

    curves: Mapping[str, Sequence[float]]
    state: str = "complete"  # complete | pruned | fail
    error: str | None = None
    n_classes: int | None = None
    max_epochs: int | None = None
    n_val: int | None = None
    monitor: str = "val_loss"
    kept_epoch: int | None = None
    # "regression": losses are MSE of standardized targets, chance level 1 (predicting the
    # training mean scores the target's variance, 1 after standardization); errors are the
    # fraction of variance unexplained (training loss, 1 - val_r2), chance error 1.
    task: str = "classification"


REGRESSION_CHANCE_LOSS = 1.0


def chance_loss(run: TrialRun) -> float | None:
    """The loss of guessing: ln K for K classes (a uniform guess), 1 for regression (the
    training mean, in standardized units); None when K is unknown."""
    if run.task == "regression":
        return REGRESSION_CHANCE_LOSS
    return math.log(run.n_classes) if run.n_classes and run.n_classes > 1 else None


# ---- detectors ---------------------------------------------------------------------------


def find_diverged(run: TrialRun, train: list[float], val: list[float]) -> Evidence:
    if run.state == "fail" and run.error and DIVERGE_ERROR.search(run.error):
        ev: Evidence = {"epochs_before_divergence": len(finite(train))}
        match = re.search(r"epoch (\d+)", run.error)
        if match:
            ev["diverged_at_epoch"] = int(match.group(1))
        if finite(train):
            ev["last_finite_train_loss"] = rounded(finite(train)[-1])
        ev["error"] = run.error[:200]
        return ev
    for name, values in (("train_loss", train), ("val_loss", val)):
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            return {"non_finite_metric": name, "diverged_at_epoch": bad[0] + 1}
    finite_train = finite(train)
    chance = chance_loss(run)
    if finite_train and chance is not None and finite_train[-1] >= DIVERGE_CHANCE_MULTIPLE * chance:
        return {
            "final_train_loss": rounded(finite_train[-1]),
            "chance_loss": rounded(chance),
            "train_loss_over_chance": rounded(finite_train[-1] / chance),
        }
    if len(finite_train) >= 2:
        best = min(finite_train)
        growth = finite_train[-1] / best if best > 0 else math.inf
        if growth >= DIVERGE_GROWTH and finite_train[-1] > finite_train[0]:
            return {
                "min_train_loss": rounded(best),
                "final_train_loss": rounded(finite_train[-1]),
                "growth_over_min": rounded(growth),
            }
    return {}


def find_gradient_problems(run: TrialRun) -> tuple[Evidence, Evidence]:
    """(vanishing evidence, exploding evidence); empty when not found or no telemetry."""
    norms = layer_series(run.curves, "grad_norm")
    if len(norms) < 2:
        return {}, {}
    first, last = next(iter(norms)), max(norms)
    first_series, last_series = norms[first], norms[last]
    n = min(len(first_series), len(last_series))
    if n == 0:
        return {}, {}
    if any(not math.isfinite(v) for s in norms.values() for v in s):
        return {}, {"non_finite_grad_norm": 1, "layers": len(norms)}
    ratios = [
        first_series[i] / last_series[i] if last_series[i] > 0 else math.inf for i in range(n)
    ]
    ratio = median(ratios)
    base: Evidence = {
        "first_to_last_grad_norm_ratio": rounded(ratio),
        "first_layer_grad_norm": rounded(median(first_series[:n])),
        "last_layer_grad_norm": rounded(median(last_series[:n])),
        "weight_layers": len(norms),
    }
    vanishing = dict(base) if ratio <= VANISHING_RATIO else {}
    growth = max(
        (s[-1] / s[0] for s in norms.values() if s and s[0] > 0),
        default=0.0,
    )
    exploding: Evidence = {}
    if ratio >= EXPLODING_RATIO or growth >= EXPLODING_GROWTH:
        exploding = {**base, "max_grad_norm_growth": rounded(growth)}
    return vanishing, exploding


def find_dead_units(run: TrialRun) -> Evidence:
    dead = {i: s[-1] for i, s in layer_series(run.curves, "dead_fraction").items() if s}
    if not dead:
        return {}
    layer, worst = max(dead.items(), key=lambda kv: kv[1])
    if worst < DEAD_FRACTION:
        return {}
    return {
        "max_dead_fraction": rounded(worst),
        "layer": layer,
        "layers_over_threshold": sum(1 for v in dead.values() if v >= DEAD_FRACTION),
    }


def find_oscillation(train: list[float]) -> Evidence:
    window = train[-OSC_WINDOW:]
    if len(window) < 4:
        return {}
    flips = sign_flip_fraction(window)
    jump = relative_jump(window)
    if flips >= OSC_SIGN_FLIP_FRACTION and jump >= OSC_RELATIVE_JUMP:
        return {
            "sign_flip_fraction": rounded(flips),
            "relative_jump": rounded(jump),
            "loss_variance": rounded(variance(window)),
            "window_epochs": len(window),
        }
    return {}


def find_unrepresentative_validation(train: list[float], val: list[float]) -> Evidence:
    tail = min(len(train), max(TAIL_EPOCHS, OSC_WINDOW))
    ratio = median([v / t for t, v in zip(train[-tail:], val[-tail:], strict=False) if t > 0])
    if ratio <= UNREP_VAL_RATIO:
        return {"val_over_train_loss": rounded(ratio), "epochs": tail}
    val_jump, train_jump = relative_jump(val[-tail:]), relative_jump(train[-tail:])
    if val_jump >= UNREP_MIN_VAL_JUMP and val_jump >= UNREP_NOISE_RATIO * max(train_jump, 1e-12):
        return {
            "val_relative_jump": rounded(val_jump),
            "train_relative_jump": rounded(train_jump),
            "val_loss_variance": rounded(variance(val[-tail:])),
            "epochs": tail,
        }
    return {}


def find_still_improving(run: TrialRun, val: list[float]) -> Evidence:
    if run.state != "complete" or len(val) < TAIL_EPOCHS:
        return {}
    best = min(range(len(val)), key=lambda i: val[i])
    start = val[-TAIL_EPOCHS]
    drop = (start - val[-1]) / start if start > 0 else 0.0
    if len(val) - (best + 1) < STILL_IMPROVING_LAST_EPOCHS and drop >= STILL_IMPROVING_DROP:
        ev: Evidence = {
            "val_loss_min_epoch": best + 1,
            "epochs_run": len(val),
            "val_loss_drop_last_k": rounded(drop),
            "val_loss_slope_last_k": rounded(slope(val[-TAIL_EPOCHS:])),
            "k": TAIL_EPOCHS,
        }
        if run.max_epochs is not None:
            ev["max_epochs"] = run.max_epochs
        return ev
    return {}
