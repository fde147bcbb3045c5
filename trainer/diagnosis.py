"""Reading a trial's learning curves and gradient telemetry (TECHNIQUES.md §8-9).

`diagnose(...)` turns per-epoch curves into findings `{kind, severity, evidence,
remedies}`: under-/over-fitting, divergence, oscillation, vanishing/exploding gradients,
dead units, an unrepresentative validation split, training stopped while still improving.
Evidence is numbers; remedies (see `trainer.remedies`) are mapped onto the study's own
search space. Pure Python: no torch, database, HTTP or Optuna.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from trainer.params import ParamValue
from trainer.remedies import RemedyContext, remedies_for

Severity = Literal["info", "warning", "critical"]
EvidenceValue = float | int | str

KINDS = (
    "diverged",
    "exploding_gradients",
    "vanishing_gradients",
    "dead_units",
    "oscillating",
    "overfit",
    "underfit",
    "unrepresentative_validation",
    "still_improving",
    "good_fit",
)

# ---- thresholds --------------------------------------------------------------------------
# Trends are read over the last TAIL epochs: long enough to average out one noisy epoch,
# short enough to describe the end of a 20-epoch run.
TAIL_EPOCHS = 5
# Below this many epochs there is no shape to read; only hard failures are reported.
MIN_EPOCHS = 3

# Diverged: a finite loss that grew this many times above its minimum is "growing by orders
# of magnitude" (TECHNIQUES §9) — no healthy run ever ends 10x above its own best loss.
DIVERGE_GROWTH = 10.0
# Diverged: a training loss this many times chance level ln(n_classes). Even a first epoch
# ends near or below chance; 10x above it means the updates blew the logits up.
DIVERGE_CHANCE_MULTIPLE = 10.0
# Error texts of a trial that stopped on a non-finite loss (trainer.DivergedError).
DIVERGE_ERROR = re.compile(r"DivergedError|non-finite|\bnan\b|\binf\b", re.IGNORECASE)

# Overfit: the validation loss rose this fraction above its minimum by the end. 10% is well
# outside epoch-to-epoch noise of a converged run (which stays within a few percent).
OVERFIT_RISE = 0.10
# ... by at least this many nats: a smaller rise of an already low loss (0.11 -> 0.13, as
# regularized nets drift late in training) does not show in accuracy and is not worth a fix.
OVERFIT_MIN_RISE_NATS = 0.05
# ... and the minimum lies at least this many epochs before the end (a rise in the last
# epoch or two is noise, not a trend).
OVERFIT_MIN_EPOCHS_AFTER_MIN = 3
# Overfit without a rise: validation loss at least this many times the training loss and
# at least OVERFIT_GAP_NATS above it — a large gap, the "high variance" picture.
OVERFIT_GAP_RATIO = 3.0
OVERFIT_GAP_NATS = 0.3

# Underfit: the final training loss is still at least this fraction of chance level
# ln(n_classes) (the loss of a uniform guess). A model that fits its data ends far below
# half of chance; one that cannot (too small, too regularized) stays near it.
UNDERFIT_CHANCE_FRACTION = 0.4
# Without n_classes: the training loss fell by less than this fraction of its first-epoch
# value — training barely moved it.
UNDERFIT_MIN_DROP = 0.3
# Underfit needs validation close to training ("both poor"): val/train below this ratio.
UNDERFIT_MAX_VAL_RATIO = 1.5

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

# Good fit: both losses ended at least this fraction below their first epoch ...
GOOD_FIT_MIN_DROP = 0.3
# ... and the final train/val gap is small: val loss within this many nats of train loss.
GOOD_FIT_MAX_GAP_NATS = 0.3

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

SEVERITY: dict[str, Severity] = {
    "diverged": "critical",
    "exploding_gradients": "critical",
    "vanishing_gradients": "critical",
    "dead_units": "warning",
    "oscillating": "warning",
    "overfit": "warning",
    "underfit": "warning",
    "unrepresentative_validation": "warning",
    "still_improving": "info",
    "good_fit": "info",
}


@dataclass(frozen=True)
class Finding:
    kind: str
    severity: Severity
    evidence: dict[str, EvidenceValue]
    remedies: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "evidence": dict(self.evidence),
            "remedies": list(self.remedies),
        }


@dataclass(frozen=True)
class TrialRun:
    """Everything diagnosis reads about one trial."""

    curves: Mapping[str, Sequence[float]]
    config: Mapping[str, ParamValue] = field(default_factory=dict)  # searched + fixed
    space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fixed: Mapping[str, ParamValue] = field(default_factory=dict)
    state: str = "complete"  # complete | pruned | fail
    error: str | None = None
    n_classes: int | None = None
    max_epochs: int | None = None


def _r(x: float) -> float:
    """Evidence rounded to 4 significant digits: readable, and stable in JSON."""
    if not math.isfinite(x) or x == 0:
        return x
    return round(x, 3 - math.floor(math.log10(abs(x))))


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def slope(values: Sequence[float]) -> float:
    """Least-squares slope per epoch."""
    n = len(values)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(values) / n
    num = sum((i - mx) * (v - my) for i, v in enumerate(values))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _relative_jump(values: Sequence[float]) -> float:
    """Mean |Δ| between successive epochs over the mean level."""
    if len(values) < 2:
        return 0.0
    jumps = [abs(b - a) for a, b in itertools.pairwise(values)]
    level = sum(abs(v) for v in values) / len(values)
    return (sum(jumps) / len(jumps)) / level if level > 0 else 0.0


def _sign_flip_fraction(values: Sequence[float]) -> float:
    diffs = [b - a for a, b in itertools.pairwise(values)]
    diffs = [d for d in diffs if d != 0]
    if len(diffs) < 2:
        return 0.0
    flips = sum(1 for a, b in itertools.pairwise(diffs) if (a > 0) != (b > 0))
    return flips / (len(diffs) - 1)


def _variance(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    m = sum(values) / len(values)
    return sum((v - m) ** 2 for v in values) / len(values)


def _layer_series(curves: Mapping[str, Sequence[float]], prefix: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for name, values in curves.items():
        if name.startswith(prefix + ".") and name[len(prefix) + 1 :].isdigit():
            out[int(name[len(prefix) + 1 :])] = list(values)
    return dict(sorted(out.items()))


# ---- detectors ---------------------------------------------------------------------------


def _diverged(run: TrialRun, train: list[float], val: list[float]) -> dict[str, EvidenceValue]:
    if run.state == "fail" and run.error and DIVERGE_ERROR.search(run.error):
        ev: dict[str, EvidenceValue] = {"epochs_before_divergence": len(_finite(train))}
        match = re.search(r"epoch (\d+)", run.error)
        if match:
            ev["diverged_at_epoch"] = int(match.group(1))
        if _finite(train):
            ev["last_finite_train_loss"] = _r(_finite(train)[-1])
        ev["error"] = run.error[:200]
        return ev
    for name, values in (("train_loss", train), ("val_loss", val)):
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            return {"non_finite_metric": name, "diverged_at_epoch": bad[0] + 1}
    finite = _finite(train)
    if finite and run.n_classes and run.n_classes > 1:
        chance = math.log(run.n_classes)
        if finite[-1] >= DIVERGE_CHANCE_MULTIPLE * chance:
            return {
                "final_train_loss": _r(finite[-1]),
                "chance_loss": _r(chance),
                "train_loss_over_chance": _r(finite[-1] / chance),
            }
    if len(finite) >= 2:
        best = min(finite)
        growth = finite[-1] / best if best > 0 else math.inf
        if growth >= DIVERGE_GROWTH and finite[-1] > finite[0]:
            return {
                "min_train_loss": _r(best),
                "final_train_loss": _r(finite[-1]),
                "growth_over_min": _r(growth),
            }
    return {}


def _gradients(run: TrialRun) -> tuple[dict[str, EvidenceValue], dict[str, EvidenceValue]]:
    """(vanishing evidence, exploding evidence); empty when not found or no telemetry."""
    norms = _layer_series(run.curves, "grad_norm")
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
    ratio = _median(ratios)
    base: dict[str, EvidenceValue] = {
        "first_to_last_grad_norm_ratio": _r(ratio),
        "first_layer_grad_norm": _r(_median(first_series[:n])),
        "last_layer_grad_norm": _r(_median(last_series[:n])),
        "weight_layers": len(norms),
    }
    vanishing = dict(base) if ratio <= VANISHING_RATIO else {}
    growth = max(
        (s[-1] / s[0] for s in norms.values() if s and s[0] > 0),
        default=0.0,
    )
    exploding: dict[str, EvidenceValue] = {}
    if ratio >= EXPLODING_RATIO or growth >= EXPLODING_GROWTH:
        exploding = {**base, "max_grad_norm_growth": _r(growth)}
    return vanishing, exploding


def _dead_units(run: TrialRun) -> dict[str, EvidenceValue]:
    dead = {i: s[-1] for i, s in _layer_series(run.curves, "dead_fraction").items() if s}
    if not dead:
        return {}
    layer, worst = max(dead.items(), key=lambda kv: kv[1])
    if worst < DEAD_FRACTION:
        return {}
    return {
        "max_dead_fraction": _r(worst),
        "layer": layer,
        "layers_over_threshold": sum(1 for v in dead.values() if v >= DEAD_FRACTION),
    }


def _oscillating(train: list[float]) -> dict[str, EvidenceValue]:
    window = train[-OSC_WINDOW:]
    if len(window) < 4:
        return {}
    flips = _sign_flip_fraction(window)
    jump = _relative_jump(window)
    if flips >= OSC_SIGN_FLIP_FRACTION and jump >= OSC_RELATIVE_JUMP:
        return {
            "sign_flip_fraction": _r(flips),
            "relative_jump": _r(jump),
            "loss_variance": _r(_variance(window)),
            "window_epochs": len(window),
        }
    return {}


def _gap_evidence(train: list[float], val: list[float]) -> dict[str, EvidenceValue]:
    gaps = [v - t for t, v in zip(train, val, strict=False)]
    tail = gaps[-TAIL_EPOCHS:]
    return {
        "final_gap": _r(gaps[-1]),
        "gap_slope_last_k": _r(slope(tail)),
        "train_loss_slope_last_k": _r(slope(train[-TAIL_EPOCHS:])),
        "k": len(tail),
    }


def _overfit(train: list[float], val: list[float]) -> dict[str, EvidenceValue]:
    n = len(val)
    best = min(range(n), key=lambda i: val[i])
    rise = (val[-1] - val[best]) / val[best] if val[best] > 0 else 0.0
    ev: dict[str, EvidenceValue] = {
        "val_loss_min_epoch": best + 1,
        "val_loss_min": _r(val[best]),
        "final_val_loss": _r(val[-1]),
        "final_train_loss": _r(train[-1]),
        "val_loss_rise": _r(rise),
        **_gap_evidence(train, val),
    }
    rising = (
        rise >= OVERFIT_RISE
        and val[-1] - val[best] >= OVERFIT_MIN_RISE_NATS
        and n - (best + 1) >= OVERFIT_MIN_EPOCHS_AFTER_MIN
        and train[-1] <= train[best]
    )
    big_gap = (
        val[-1] >= OVERFIT_GAP_RATIO * train[-1]
        and val[-1] - train[-1] >= OVERFIT_GAP_NATS
        and slope([v - t for t, v in zip(train, val, strict=False)][-TAIL_EPOCHS:]) >= 0
    )
    return ev if rising or big_gap else {}


def _underfit(run: TrialRun, train: list[float], val: list[float]) -> dict[str, EvidenceValue]:
    ev: dict[str, EvidenceValue] = {
        "final_train_loss": _r(train[-1]),
        "final_val_loss": _r(val[-1]),
        "train_loss_slope_last_k": _r(slope(train[-TAIL_EPOCHS:])),
    }
    if run.n_classes and run.n_classes > 1:
        chance = math.log(run.n_classes)
        ev["chance_loss"] = _r(chance)
        ev["train_loss_over_chance"] = _r(train[-1] / chance)
        high = train[-1] >= UNDERFIT_CHANCE_FRACTION * chance
    else:
        drop = 1 - train[-1] / train[0] if train[0] > 0 else 0.0
        ev["train_loss_drop"] = _r(drop)
        high = drop < UNDERFIT_MIN_DROP
    close = train[-1] > 0 and val[-1] / train[-1] <= UNDERFIT_MAX_VAL_RATIO
    acc = run.curves.get("train_accuracy")
    if acc:
        ev["final_train_accuracy"] = _r(acc[-1])
    return ev if high and close else {}


def _unrepresentative(train: list[float], val: list[float]) -> dict[str, EvidenceValue]:
    tail = min(len(train), max(TAIL_EPOCHS, OSC_WINDOW))
    ratio = _median([v / t for t, v in zip(train[-tail:], val[-tail:], strict=False) if t > 0])
    if ratio <= UNREP_VAL_RATIO:
        return {"val_over_train_loss": _r(ratio), "epochs": tail}
    val_jump, train_jump = _relative_jump(val[-tail:]), _relative_jump(train[-tail:])
    if val_jump >= UNREP_MIN_VAL_JUMP and val_jump >= UNREP_NOISE_RATIO * max(train_jump, 1e-12):
        return {
            "val_relative_jump": _r(val_jump),
            "train_relative_jump": _r(train_jump),
            "val_loss_variance": _r(_variance(val[-tail:])),
            "epochs": tail,
        }
    return {}


def _still_improving(run: TrialRun, val: list[float]) -> dict[str, EvidenceValue]:
    if run.state != "complete" or len(val) < TAIL_EPOCHS:
        return {}
    best = min(range(len(val)), key=lambda i: val[i])
    start = val[-TAIL_EPOCHS]
    drop = (start - val[-1]) / start if start > 0 else 0.0
    if len(val) - (best + 1) < STILL_IMPROVING_LAST_EPOCHS and drop >= STILL_IMPROVING_DROP:
        ev: dict[str, EvidenceValue] = {
            "val_loss_min_epoch": best + 1,
            "epochs_run": len(val),
            "val_loss_drop_last_k": _r(drop),
            "val_loss_slope_last_k": _r(slope(val[-TAIL_EPOCHS:])),
            "k": TAIL_EPOCHS,
        }
        if run.max_epochs is not None:
            ev["max_epochs"] = run.max_epochs
        return ev
    return {}


def _good_fit(train: list[float], val: list[float]) -> dict[str, EvidenceValue]:
    train_drop = 1 - train[-1] / train[0] if train[0] > 0 else 0.0
    val_drop = 1 - val[-1] / val[0] if val[0] > 0 else 0.0
    gap = val[-1] - train[-1]
    fell = train_drop >= GOOD_FIT_MIN_DROP and val_drop >= GOOD_FIT_MIN_DROP
    if not fell or gap > GOOD_FIT_MAX_GAP_NATS:
        return {}
    return {
        "final_train_loss": _r(train[-1]),
        "final_val_loss": _r(val[-1]),
        "final_gap": _r(gap),
        "train_loss_drop": _r(train_drop),
        "val_loss_drop": _r(val_drop),
    }


# ---- entry point -------------------------------------------------------------------------


def diagnose(run: TrialRun) -> list[Finding]:
    """Findings for one trial, most severe first; an empty list when there is too little
    to read (e.g. a trial that failed before its first epoch for another reason)."""
    train = list(run.curves.get("train_loss", []))
    val = list(run.curves.get("val_loss", []))
    n = min(len(train), len(val))
    train, val = train[:n], val[:n]
    found: dict[str, dict[str, EvidenceValue]] = {}

    if ev := _diverged(run, train, val):
        found["diverged"] = ev
    vanishing, exploding = _gradients(run)
    if exploding:
        found["exploding_gradients"] = exploding
    if vanishing:
        found["vanishing_gradients"] = vanishing
    if ev := _dead_units(run):
        found["dead_units"] = ev

    if "diverged" not in found and n >= MIN_EPOCHS and all(map(math.isfinite, train + val)):
        if ev := _oscillating(train):
            found["oscillating"] = ev
        if ev := _overfit(train, val):
            found["overfit"] = ev
        elif ev := _underfit(run, train, val):
            found["underfit"] = ev
        if ev := _unrepresentative(train, val):
            found["unrepresentative_validation"] = ev
        if ev := _still_improving(run, val):
            found["still_improving"] = ev
        problems = set(found) - {"still_improving"}
        if not problems and (ev := _good_fit(train, val)):
            found["good_fit"] = ev

    ctx = RemedyContext(
        config=run.config, space=run.space, fixed=run.fixed, max_epochs=run.max_epochs
    )
    return [
        Finding(kind=k, severity=SEVERITY[k], evidence=found[k], remedies=remedies_for(k, ctx))
        for k in KINDS
        if k in found
    ]


def diagnose_dicts(run: TrialRun) -> list[dict[str, Any]]:
    return [f.to_dict() for f in diagnose(run)]


# ---- early verdicts (for pruning) --------------------------------------------------------

# A hopeless verdict must hold this many epochs in a row before a trial is stopped for it:
# one bad epoch is noise, three in a row is a trend.
CONFIRM_EPOCHS = 3
# Vanishing gradients only stop a trial that is not learning anyway: its training loss fell
# by less than this fraction over the confirming epochs.
STALLED_DROP = 0.01
# A diverged-looking trial whose loss fell by more than this fraction over the confirming
# epochs is recovering (adaptive optimizers can shrink a blown-up first step), not stopped.
RECOVERING_DROP = 0.5


@dataclass
class EarlyVerdict:
    """Follows a running trial epoch by epoch; `update` returns a reason to stop it once it
    is confidently `diverged` or has `vanishing_gradients` (TECHNIQUES §8)."""

    n_classes: int | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    streaks: dict[str, int] = field(default_factory=dict)

    def update(self, values: Mapping[str, float]) -> str | None:
        for name, value in values.items():
            self.curves.setdefault(name, []).append(value)
        train = self.curves.get("train_loss", [])
        run = TrialRun(curves=self.curves, state="running", n_classes=self.n_classes)
        window = train[-CONFIRM_EPOCHS:]
        drop = (window[0] - window[-1]) / window[0] if window and window[0] > 0 else 0.0
        now: dict[str, dict[str, EvidenceValue]] = {}
        if ev := _diverged(run, train, self.curves.get("val_loss", [])):
            now["diverged"] = ev
        if ev := _gradients(run)[0]:
            now["vanishing_gradients"] = ev
        # Each verdict also needs the loss trend over the same epochs to agree: a diverged
        # trial that is not recovering, vanishing gradients in a trial that is not learning.
        trend = {"diverged": drop <= RECOVERING_DROP, "vanishing_gradients": drop < STALLED_DROP}
        for kind in ("diverged", "vanishing_gradients"):
            self.streaks[kind] = self.streaks.get(kind, 0) + 1 if kind in now else 0
            if self.streaks[kind] >= CONFIRM_EPOCHS and trend[kind]:
                facts = ", ".join(f"{k}={v}" for k, v in now[kind].items())
                return f"{kind} for {CONFIRM_EPOCHS} epochs in a row ({facts})"
        return None
