"""Small statistics of per-epoch curves that diagnosis reads (pure Python, no torch)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence


def rounded(x: float) -> float:
    """Evidence rounded to 4 significant digits: readable, and stable in JSON."""
    if not math.isfinite(x) or x == 0:
        return x
    return round(x, 3 - math.floor(math.log10(abs(x))))


def finite(values: Sequence[float]) -> list[float]:
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


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def relative_jump(values: Sequence[float]) -> float:
    """Mean |Δ| between successive epochs over the mean level."""
    if len(values) < 2:
        return 0.0
    jumps = [abs(b - a) for a, b in itertools.pairwise(values)]
    level = sum(abs(v) for v in values) / len(values)
    return (sum(jumps) / len(jumps)) / level if level > 0 else 0.0


def sign_flip_fraction(values: Sequence[float]) -> float:
    diffs = [b - a for a, b in itertools.pairwise(values)]
    diffs = [d for d in diffs if d != 0]
    if len(diffs) < 2:
        return 0.0
    flips = sum(1 for a, b in itertools.pairwise(diffs) if (a > 0) != (b > 0))
    return flips / (len(diffs) - 1)


def variance(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    m = sum(values) / len(values)
    return sum((v - m) ** 2 for v in values) / len(values)


def layer_series(curves: Mapping[str, Sequence[float]], prefix: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for name, values in curves.items():
        if name.startswith(prefix + ".") and name[len(prefix) + 1 :].isdigit():
            out[int(name[len(prefix) + 1 :])] = list(values)
    return dict(sorted(out.items()))


def early_stop(
    values: Sequence[float], patience: int, mode: str = "min", min_delta: float = 0.0
) -> tuple[int, int]:
    """Replay early stopping (trainer.schedules.EarlyStopping, TECHNIQUES.md §5) over a
    recorded per-epoch metric: (the epoch it stops after, the best epoch whose weights it
    keeps), both 1-based. Without a stop within the curve: (len(values), best epoch).

    `mode` "min" (losses) or "max" (accuracies); `patience` >= 1 epochs without an
    improvement larger than `min_delta`.
    """
    sign = 1.0 if mode == "min" else -1.0
    best, best_epoch, bad = math.inf, 0, 0
    for epoch, value in enumerate(values, start=1):
        score = sign * value
        if best_epoch == 0 or score < best - min_delta:
            best, best_epoch, bad = score, epoch, 0
            continue
        bad += 1
        if bad >= patience:
            return epoch, best_epoch
    return len(values), best_epoch


# Curve metrics where larger is better; every other (losses, errors) is minimized.
MAXIMIZED_METRICS = frozenset({"train_accuracy", "val_accuracy", "val_r2"})


def metric_mode(metric: str) -> str:
    """'max' for accuracies and R², 'min' for losses and errors (RMSE, MAE)."""
    return "max" if metric in MAXIMIZED_METRICS else "min"
