"""Reading a trial's learning curves and gradient telemetry (TECHNIQUES.md §8-9).

`diagnose(run)` turns per-epoch curves into findings `{kind, severity, evidence}`:
divergence, oscillation, vanishing/exploding gradients, dead units, an unrepresentative
validation split, training stopped while still improving, and the fit verdict read from the
bias/variance picture (over-/underfit, good fit, or inconclusive). Evidence is numbers (the
detectors and their thresholds are in `trainer.detectors` and `trainer.fit_verdict`); which
hyperparameter moves help each kind is `trainer.advice`. `EarlyVerdict` follows a running
trial and says when to stop a hopeless one. Pure Python: no torch, database, HTTP or Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trainer.detectors import (
    MIN_EPOCHS,
    Evidence,
    TrialRun,
    find_dead_units,
    find_diverged,
    find_gradient_problems,
    find_oscillation,
    find_still_improving,
    find_unrepresentative_validation,
)
from trainer.fit_verdict import fit_verdict

__all__ = ["KINDS", "SEVERITY", "EarlyVerdict", "Finding", "TrialRun", "diagnose"]

Severity = Literal["info", "warning", "critical"]

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
    "inconclusive",
)

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
    "inconclusive": "info",
}


@dataclass(frozen=True)
class Finding:
    """One kind of problem (or `good_fit`, or `inconclusive`) seen in a trial, with its
    evidence (numbers by name; `why`: the reading in words)."""

    kind: str
    severity: Severity
    evidence: Evidence

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "evidence": dict(self.evidence)}


# ---- entry point -------------------------------------------------------------------------


def diagnose(run: TrialRun) -> list[Finding]:
    """Findings for one trial, most severe first.

    Every trial with at least one epoch of finite losses gets a fit verdict (TECHNIQUES §9,
    `trainer.fit_verdict`): `overfit` or `underfit` always; `good_fit` (every bias and
    variance term small, in loss and in error) or `inconclusive` (neither good nor clearly
    bad, or too few epochs to tell) only when no other problem was found. Empty only when
    there is nothing to read (a trial that failed before its first epoch for another
    reason); a diverged trial gets `diverged` and no fit verdict.
    """
    train = list(run.curves.get("train_loss", []))
    val = list(run.curves.get("val_loss", []))
    n = min(len(train), len(val))
    train, val = train[:n], val[:n]
    found: dict[str, Evidence] = {}

    if ev := find_diverged(run, train, val):
        found["diverged"] = ev
    vanishing, exploding = find_gradient_problems(run)
    if exploding:
        found["exploding_gradients"] = exploding
    if vanishing:
        found["vanishing_gradients"] = vanishing
    if ev := find_dead_units(run):
        found["dead_units"] = ev

    readable = n >= 1 and "diverged" not in found and all(map(math.isfinite, train + val))
    if readable and n >= MIN_EPOCHS:
        if ev := find_oscillation(train):
            found["oscillating"] = ev
        if ev := find_unrepresentative_validation(train, val):
            found["unrepresentative_validation"] = ev
        if ev := find_still_improving(run, val):
            found["still_improving"] = ev
    if readable:
        kind, ev = fit_verdict(run, train, val)
        problems = set(found) - {"still_improving"}
        if kind in ("overfit", "underfit") or not problems:
            found[kind] = ev

    return [Finding(kind=k, severity=SEVERITY[k], evidence=found[k]) for k in KINDS if k in found]


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
    task: str = "classification"
    curves: dict[str, list[float]] = field(default_factory=dict)
    streaks: dict[str, int] = field(default_factory=dict)

    def update(self, values: Mapping[str, float]) -> str | None:
        for name, value in values.items():
            self.curves.setdefault(name, []).append(value)
        train = self.curves.get("train_loss", [])
        run = TrialRun(
            curves=self.curves, state="running", n_classes=self.n_classes, task=self.task
        )
        window = train[-CONFIRM_EPOCHS:]
        drop = (window[0] - window[-1]) / window[0] if window and window[0] > 0 else 0.0
        now: dict[str, Evidence] = {}
        if ev := find_diverged(run, train, self.curves.get("val_loss", [])):
            now["diverged"] = ev
        if ev := find_gradient_problems(run)[0]:
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
