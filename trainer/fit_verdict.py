"""The fit verdict of a trial: `overfit`, `underfit`, `good_fit` or `inconclusive`, read from
the bias/variance picture of its learning curves (TECHNIQUES.md §9).

The picture is read twice, in cross-entropy (nats) and in classification error
(1 - accuracy), at the epoch whose weights the trial keeps (its last, or the best one when
early stopping restored it):

- bias: what the model still gets wrong on its own training rows (training error, loss);
- variance: how much worse validation is than training (the gap between the errors, and
  between the losses).

Error terms are read relative to the task's chance level, the error of a uniform guess
`1 - 1/K` (0.9 on digits' 10 classes, 0.5 on 2), as losses are relative to `ln K`, so one
threshold means the same on every task. A gap only counts once it is larger than the noise
of the validation error estimate, `sqrt(p(1 - p)/n_val)`.

Regression is read in the same terms (TECHNIQUES §9: its chance level is predicting the
training mean): losses are the MSE of standardized targets, chance loss 1 (the target's
variance); errors are the fraction of variance left unexplained, training loss on the
training split and 1 - R² on the validation split, chance error 1. The noise of the
validation error is `e·sqrt(2/n_val)`, the standard error of a mean of n_val squared
Gaussian residuals relative to their mean.

`good_fit` needs every term small — the losses fell, training error low, and a small gap in
loss *and* in error with the validation loss not turning up; `overfit` and `underfit` need
their picture clearly; anything in between is `inconclusive` (info), with the terms, which
side it leans to, and why it is not a good fit. Pure Python: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.curve_stats import early_stop, median, metric_mode, rounded, slope
from trainer.detectors import (
    MIN_EPOCHS,
    REGRESSION_CHANCE_LOSS,
    TAIL_EPOCHS,
    Evidence,
    TrialRun,
    chance_loss,
)

# ---- thresholds --------------------------------------------------------------------------
# Loss rules, in nats (the loss-only diagnosis's, with the rise read robustly):
# Overfit: the validation loss rose this fraction above its minimum by the end: the median of
# the last TAIL_EPOCHS epochs over the smallest 3-epoch median, so that neither one low epoch
# at the minimum nor one high epoch at the end makes a rise (quickstart trial #1's 0.269 ->
# 0.303 is such a pair around a flat 0.28). 10% is well outside epoch-to-epoch noise of a
# converged run (which stays within a few percent).
OVERFIT_RISE = 0.10
# ... by at least this many nats, when the rise is the only sign: a smaller rise of an already
# low loss (0.11 -> 0.13, as regularized nets drift late in training) does not show in
# accuracy. A rise that the error gap confirms (below) needs no floor.
OVERFIT_MIN_RISE_NATS = 0.05
# ... and the minimum lies at least this many epochs before the end (a rise in the last
# epoch or two is noise, not a trend).
OVERFIT_MIN_EPOCHS_AFTER_MIN = 3
# Overfit without a rise: validation loss at least this many times the training loss and
# at least OVERFIT_GAP_NATS above it, the gap not shrinking — a large, growing gap.
OVERFIT_GAP_RATIO = 3.0
OVERFIT_GAP_NATS = 0.3

# Error rules, as fractions of the chance error 1 - 1/K (plain fractions when K is unknown):
# Overfit: validation error at least this much above training error — 4.5 points on 10
# classes, 2.5 on 2. Three seeds of one configuration on digits' 360 validation rows spread
# by about 1 point, so 4.5 points is a difference of the model, not of the draw ...
OVERFIT_ERROR_GAP = 0.05
# ... and at least this multiple of the training error: the variance is at least the bias,
# "a near-perfect training score with a clearly worse validation score" (TECHNIQUES §9).
OVERFIT_ERROR_RATIO = 2.0
# Good fit: validation error within this much of training error (2.25 points on 10 classes):
# half the overfit gap; between the two the verdict is inconclusive.
GOOD_FIT_MAX_ERROR_GAP = 0.025
# Good fit: training error at most this much (18 points on 10 classes, 10 on 2): half the
# underfit level. What a task allows is unknown (overlapping classes, label noise: 3 blobs
# with cluster_std 1 keep 8% training error), so only a clearly high one counts as bias left.
GOOD_FIT_MAX_TRAIN_ERROR = 0.2
# A gap counts as present (overfit) or absent (good fit) only beyond this many standard errors
# of the validation error, sqrt(p(1 - p)/n_val): with wine's 36 validation rows one row is
# 2.8 points, and a 2-row difference is chance.
NOISE_Z = 2.0

# Good fit (losses): both losses ended at least this fraction below their first epoch ...
GOOD_FIT_MIN_DROP = 0.3
# ... and the validation loss is within this many nats of the training loss.
GOOD_FIT_MAX_GAP_NATS = 0.3

# Underfit: the training loss is still at least this fraction of chance level ln K (the loss
# of a uniform guess), or the training error this fraction of the chance error. A model
# that fits its data ends far below half of chance; one that cannot (too small, too
# regularized) stays near it.
UNDERFIT_CHANCE_FRACTION = 0.4
# Without K: the training loss fell by less than this fraction of its first-epoch value.
UNDERFIT_MIN_DROP = 0.3
# Underfit needs validation close to training ("both poor"): val/train loss below this.
UNDERFIT_MAX_VAL_RATIO = 1.5

# The patience of the early stopping that remedies replay (the advice's range is 3-10).
SUGGESTED_PATIENCE = 10

FIT_KINDS = ("overfit", "underfit", "good_fit", "inconclusive")


@dataclass(frozen=True)
class FitPicture:
    """A trial's bias/variance terms at epoch `at` (1-based: the epoch whose weights it
    keeps) of `epochs` run. Losses in nats; errors are 1 - accuracy (None when accuracy was
    not recorded); `chance_*` are ln K and 1 - 1/K (None when K is unknown)."""

    epochs: int
    at: int
    train: list[float]  # per-epoch losses up to `at`
    val: list[float]
    train_error: float | None
    val_error: float | None
    chance_loss: float | None
    chance_error: float | None
    val_error_noise: float | None  # standard error of the validation error estimate
    val_loss_min_epoch: int  # over the whole run
    monitor_stop: tuple[int, int] | None  # early stopping replayed: (stops at, keeps)
    kept_epoch: int | None

    @property
    def train_loss(self) -> float:
        return self.train[-1]

    @property
    def val_loss(self) -> float:
        return self.val[-1]

    @property
    def best(self) -> int:
        """0-based index of the validation-loss minimum up to `at`."""
        return min(range(len(self.val)), key=lambda i: self.val[i])

    @property
    def low(self) -> float:
        """The validation loss's minimum level: its smallest 3-epoch centred median, so that
        one epoch that happens to be low is not the minimum a rise is measured from."""
        n = len(self.val)
        return min(median(self.val[max(i - 1, 0) : i + 2]) for i in range(n))

    @property
    def rise_nats(self) -> float:
        """How far the validation loss rose above its minimum by `at`, in nats: the median of
        the last TAIL_EPOCHS epochs over `low` (one noisy epoch at either end is not a rise),
        when the minimum lies at least OVERFIT_MIN_EPOCHS_AFTER_MIN epochs before `at`;
        else 0."""
        if len(self.val) - (self.best + 1) < OVERFIT_MIN_EPOCHS_AFTER_MIN:
            return 0.0
        return max(median(self.val[-TAIL_EPOCHS:]) - self.low, 0.0)

    @property
    def rise(self) -> float:
        """`rise_nats` relative to the minimum level."""
        low = self.low
        return self.rise_nats / low if low > 0 else 0.0

    @property
    def error_scale(self) -> float:
        return self.chance_error or 1.0

    @property
    def error_gap(self) -> float | None:
        if self.train_error is None or self.val_error is None:
            return None
        return self.val_error - self.train_error

    def gap_beyond(self, fraction: float) -> bool:
        """The error gap is at least `fraction` of the chance error and beyond noise."""
        gap = self.error_gap
        if gap is None:
            return False
        noise = NOISE_Z * (self.val_error_noise or 0.0)
        return gap >= fraction * self.error_scale and gap > noise

    def gap_within(self, fraction: float) -> bool:
        """The error gap is at most `fraction` of the chance error, or within noise."""
        gap = self.error_gap
        if gap is None:
            return False
        noise = NOISE_Z * (self.val_error_noise or 0.0)
        return gap <= max(fraction * self.error_scale, noise)

    def evidence(self) -> Evidence:
        """The terms as evidence: losses, errors, chance levels, the best epoch."""
        ev: Evidence = {
            "final_train_loss": rounded(self.train_loss),
            "final_val_loss": rounded(self.val_loss),
            "final_gap": rounded(self.val_loss - self.train_loss),
        }
        if self.chance_loss is not None:
            ev["chance_loss"] = rounded(self.chance_loss)
        if self.train_error is not None and self.val_error is not None:
            gap = self.val_error - self.train_error
            ev["train_error"] = rounded(self.train_error)
            ev["val_error"] = rounded(self.val_error)
            ev["error_gap"] = rounded(gap)
            if self.chance_error is not None:
                ev["chance_error"] = rounded(self.chance_error)
                ev["error_gap_of_chance"] = rounded(gap / self.chance_error)
            if self.val_error_noise is not None:
                ev["val_error_noise"] = rounded(self.val_error_noise)
        ev["val_loss_min_epoch"] = self.val_loss_min_epoch
        ev["epochs_after_best"] = self.epochs - self.val_loss_min_epoch
        ev["epochs_run"] = self.epochs
        if self.kept_epoch is not None:
            ev["kept_epoch"] = self.kept_epoch
        return ev


def read_picture(run: TrialRun, train: list[float], val: list[float]) -> FitPicture:
    """The bias/variance terms of `run` (train/val losses of equal length >= 1)."""
    n = len(train)
    at = n if run.kept_epoch is None else max(1, min(run.kept_epoch, n))
    train_error, val_error, noise = _errors(run, train, at)
    k = run.n_classes if run.n_classes and run.n_classes > 1 else None
    chance_error = None if k is None else 1 - 1 / k
    if run.task == "regression":
        chance_error = REGRESSION_CHANCE_LOSS
    monitored = list(run.curves.get(run.monitor, []))
    stop = None
    if run.kept_epoch is None and len(monitored) >= n:
        stop = early_stop(monitored[:n], SUGGESTED_PATIENCE, metric_mode(run.monitor))
    return FitPicture(
        epochs=n,
        at=at,
        train=train[:at],
        val=val[:at],
        train_error=train_error,
        val_error=val_error,
        chance_loss=chance_loss(run),
        chance_error=chance_error,
        val_error_noise=noise,
        val_loss_min_epoch=min(range(n), key=lambda i: val[i]) + 1,
        monitor_stop=stop,
        kept_epoch=run.kept_epoch,
    )


def _errors(
    run: TrialRun, train: list[float], at: int
) -> tuple[float | None, float | None, float | None]:
    """(training error, validation error, the validation error's standard error) at epoch
    `at`: 1 - accuracy for classification, the fraction of variance unexplained for
    regression; None where the curves do not hold them."""
    if run.task == "regression":
        r2 = list(run.curves.get("val_r2", []))
        if len(r2) < at:
            return None, None, None
        val_error = 1 - r2[at - 1]
        noise = val_error * math.sqrt(2 / run.n_val) if run.n_val else None
        return train[at - 1], val_error, noise
    train_acc = list(run.curves.get("train_accuracy", []))
    val_acc = list(run.curves.get("val_accuracy", []))
    if len(train_acc) < at or len(val_acc) < at:
        return None, None, None
    train_error, val_error = 1 - train_acc[at - 1], 1 - val_acc[at - 1]
    noise = None
    if run.n_val:
        p = max(val_error, 1 / run.n_val)  # a zero error is still uncertain
        noise = math.sqrt(p * (1 - p) / run.n_val)
    return train_error, val_error, noise


# ---- the verdicts ------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _error_words(p: FitPicture) -> str:
    assert p.train_error is not None and p.val_error is not None
    words = f"validation error {p.val_error:.3f} vs training error {p.train_error:.3f}"
    if p.chance_error is not None:
        gap = p.val_error - p.train_error
        words += f" (gap {_pct(gap / p.chance_error)} of the chance error {p.chance_error:.2f})"
    return words


def overfit_signs(p: FitPicture) -> list[str]:
    """Each sign of high variance present in the picture, in words; empty when none."""
    signs = []
    best = p.best
    rising = p.rise >= OVERFIT_RISE and p.train_loss <= p.train[best]
    rise_words = (
        f"validation loss rose {_pct(p.rise)} above its minimum {p.low:.3g} at epoch "
        f"{best + 1} while the training loss fell to {p.train_loss:.3g}"
    )
    if rising and p.rise_nats >= OVERFIT_MIN_RISE_NATS:
        signs.append(rise_words)
    elif rising and p.gap_beyond(GOOD_FIT_MAX_ERROR_GAP):
        signs.append(rise_words + ", and the error gap confirms it")
    gaps = [v - t for t, v in zip(p.train, p.val, strict=True)]
    if (
        p.val_loss >= OVERFIT_GAP_RATIO * p.train_loss
        and p.val_loss - p.train_loss >= OVERFIT_GAP_NATS
        and slope(gaps[-TAIL_EPOCHS:]) >= 0
    ):
        signs.append(
            f"validation loss {p.val_loss:.3g} is {p.val_loss / max(p.train_loss, 1e-12):.3g}x "
            f"the training loss {p.train_loss:.3g} and the gap is not closing"
        )
    if (
        p.train_error is not None
        and p.val_error is not None
        and p.gap_beyond(OVERFIT_ERROR_GAP)
        and p.val_error >= OVERFIT_ERROR_RATIO * p.train_error
    ):
        signs.append(_error_words(p) + ": the validation score is clearly worse")
    return signs


def _underfit(run: TrialRun, p: FitPicture) -> Evidence:
    if p.chance_loss is not None:
        high = p.train_loss >= UNDERFIT_CHANCE_FRACTION * p.chance_loss
        if p.train_error is not None and p.chance_error is not None:
            high = high or p.train_error >= UNDERFIT_CHANCE_FRACTION * p.chance_error
    else:
        high = p.train_loss / p.train[0] > 1 - UNDERFIT_MIN_DROP if p.train[0] > 0 else True
    close = p.train_loss > 0 and p.val_loss / p.train_loss <= UNDERFIT_MAX_VAL_RATIO
    if not (high and close):
        return {}
    ev = {**p.evidence(), "train_loss_slope_last_k": rounded(slope(p.train[-TAIL_EPOCHS:]))}
    if p.chance_loss is not None:
        ev["train_loss_over_chance"] = rounded(p.train_loss / p.chance_loss)
        why = (
            f"training loss {p.train_loss:.3g} is {_pct(p.train_loss / p.chance_loss)} of "
            f"the chance level {_chance_words(run)} = {p.chance_loss:.3g}"
        )
        if p.train_error is not None and p.chance_error is not None:
            why += (
                f" and training error {p.train_error:.3f} is "
                f"{_pct(p.train_error / p.chance_error)} of the chance error"
            )
    else:
        ev["train_loss_drop"] = rounded(1 - p.train_loss / p.train[0])
        why = f"training loss fell only {_pct(1 - p.train_loss / p.train[0])}"
    ev["why"] = why + f", with validation close to it ({p.val_loss:.3g}): high bias"
    acc = run.curves.get("train_accuracy")
    if acc:
        ev["final_train_accuracy"] = rounded(acc[p.at - 1])
    return ev


def _chance_words(run: TrialRun) -> str:
    return "(the target's variance)" if run.task == "regression" else "ln K"


def _not_good(p: FitPicture) -> list[str]:
    """Why the picture is not a good fit, in words; empty when it is one."""
    why = []
    drop_t = 1 - p.train_loss / p.train[0] if p.train[0] > 0 else 0.0
    drop_v = 1 - p.val_loss / p.val[0] if p.val[0] > 0 else 0.0
    if min(drop_t, drop_v) < GOOD_FIT_MIN_DROP:
        why.append(
            f"the losses fell only {_pct(drop_t)} (train) and {_pct(drop_v)} (validation) "
            f"from the first epoch; a good fit falls at least {_pct(GOOD_FIT_MIN_DROP)}"
        )
    if p.val_loss - p.train_loss > GOOD_FIT_MAX_GAP_NATS:
        why.append(
            f"validation loss is {p.val_loss - p.train_loss:.3g} nats above training "
            f"(a good fit: at most {GOOD_FIT_MAX_GAP_NATS})"
        )
    if p.rise >= OVERFIT_RISE and p.rise_nats >= OVERFIT_MIN_RISE_NATS:
        why.append(f"validation loss turned up {_pct(p.rise)} from epoch {p.best + 1}")
    if p.train_error is None or p.val_error is None:
        why.append(
            "accuracy was not recorded (nor R², for regression), so the fit cannot be "
            "confirmed in error terms"
        )
        return why
    if p.train_error > GOOD_FIT_MAX_TRAIN_ERROR * p.error_scale:
        why.append(
            f"training error {p.train_error:.3f} is above "
            f"{_pct(GOOD_FIT_MAX_TRAIN_ERROR)} of the chance error (bias left)"
        )
    if not p.gap_within(GOOD_FIT_MAX_ERROR_GAP):
        why.append(
            _error_words(p) + f"; a good fit is within {_pct(GOOD_FIT_MAX_ERROR_GAP)}, "
            f"overfitting from {_pct(OVERFIT_ERROR_GAP)}"
        )
    return why


def _leans(p: FitPicture) -> str:
    """Which term is larger, the one to work on first: "variance" or "bias"."""
    if p.train_error is not None and p.val_error is not None:
        return "variance" if p.val_error - p.train_error >= p.train_error else "bias"
    if p.chance_loss is not None:
        return "variance" if p.val_loss - p.train_loss >= p.train_loss else "bias"
    return "variance" if p.val_loss > p.train_loss else "bias"


def _with_stop(p: FitPicture, ev: Evidence) -> Evidence:
    """Add what early stopping at SUGGESTED_PATIENCE would have done, when it would have
    stopped before the end."""
    if p.monitor_stop is not None and p.monitor_stop[0] < p.epochs:
        stops, keeps = p.monitor_stop
        ev.update(
            {
                "early_stop_patience": SUGGESTED_PATIENCE,
                "early_stop_at_epoch": stops,
                "early_stop_keeps_epoch": keeps,
            }
        )
    return ev


def fit_verdict(run: TrialRun, train: list[float], val: list[float]) -> tuple[str, Evidence]:
    """The fit verdict of a run with at least one epoch of finite losses: one of FIT_KINDS
    and its evidence. `train`, `val`: per-epoch losses of equal length."""
    if len(train) < MIN_EPOCHS:
        return "inconclusive", {
            "epochs_run": len(train),
            "why": f"only {len(train)} epoch(s): too few to read a shape (needs {MIN_EPOCHS})",
            "leans": "none",
        }
    p = read_picture(run, train, val)
    if signs := overfit_signs(p):
        ev = {
            **p.evidence(),
            "val_loss_min": rounded(p.val[p.best]),
            "val_loss_rise": rounded(p.rise),
            "gap_slope_last_k": rounded(
                slope([v - t for t, v in zip(p.train, p.val, strict=True)][-TAIL_EPOCHS:])
            ),
            "train_loss_slope_last_k": rounded(slope(p.train[-TAIL_EPOCHS:])),
            "k": min(TAIL_EPOCHS, len(p.train)),
            "why": "; ".join(signs),
        }
        return "overfit", _with_stop(p, ev)
    if ev := _underfit(run, p):
        return "underfit", ev
    if not (why := _not_good(p)):
        ev = p.evidence()
        ev["train_loss_drop"] = rounded(1 - p.train_loss / p.train[0])
        ev["val_loss_drop"] = rounded(1 - p.val_loss / p.val[0])
        return "good_fit", ev
    ev = {**p.evidence(), "leans": _leans(p), "why": "; ".join(why)}
    return "inconclusive", _with_stop(p, ev)
