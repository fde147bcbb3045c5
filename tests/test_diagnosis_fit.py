"""The fit verdict reads the bias/variance picture (TECHNIQUES.md §9; issue 12 §7): training
error against validation error as well as the losses, relative to the task's chance level
and to the noise of the validation error. `good_fit` needs every term small; a trial neither
good nor clearly bad is `inconclusive` (info), never nothing and never `good_fit`."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from service.analysis.remedies import RemedyContext, with_remedies
from service.analysis.report import _advice
from service.studies.spec import StudySpec
from tests.test_diagnosis import linear, plateau, rise_after
from trainer import TensorData, TrainConfig, fit, load_dataset
from trainer.advice import CAPACITY, EARLY_STOPPING, REGULARIZE, moves_for
from trainer.curve_stats import early_stop
from trainer.data_size import subsample
from trainer.diagnosis import SEVERITY, TrialRun, diagnose
from trainer.fit_verdict import (
    FIT_KINDS,
    GOOD_FIT_MAX_ERROR_GAP,
    GOOD_FIT_MAX_GAP_NATS,
    GOOD_FIT_MAX_TRAIN_ERROR,
    NOISE_Z,
)


def curves(
    train_loss: list[float],
    val_loss: list[float],
    train_acc: float | None,
    val_acc: float | None,
) -> dict[str, list[float]]:
    """Loss curves, and accuracy curves rising from 0.1 to `train_acc` and `val_acc`."""
    out = {"train_loss": train_loss, "val_loss": val_loss}
    n = len(train_loss)
    if train_acc is not None and val_acc is not None:
        out["train_accuracy"] = plateau(0.1, train_acc, n, tau=1.0)
        out["val_accuracy"] = plateau(0.1, val_acc, n, tau=1.0)
    return out


# The losses of a good fit: both fall to a plateau 0.1 nats apart.
GOOD_LOSSES = (plateau(2.0, 0.05, 20), plateau(2.0, 0.15, 20))


# ---- issue 12 §7: the memorizing model ---------------------------------------------------

# As reported: digits with val_fraction 0.5 (899 validation rows), a 3x512 MLP memorizing its
# 359 training rows over 150 epochs: train loss 6e-6 and accuracy 1.000, validation accuracy
# 0.944, validation loss 0.26 at epoch 12 and 0.29 at epoch 150.
MEMORIZED = curves(
    plateau(2.3, 6e-6, 150, tau=3.0),
    rise_after(0.26, 12, 0.29, 150),
    1.0,
    0.944,
)
MEMORIZED_RUN = TrialRun(curves=MEMORIZED, n_classes=10, n_val=899, max_epochs=150)


def test_the_memorizing_model_is_overfit_with_errors_and_the_wasted_epochs() -> None:
    (finding,) = diagnose(MEMORIZED_RUN)
    assert finding.kind == "overfit"
    ev = finding.evidence
    assert ev["train_error"] == pytest.approx(0.0, abs=1e-6)
    assert ev["val_error"] == pytest.approx(0.056)
    assert ev["chance_error"] == pytest.approx(0.9)
    assert ev["error_gap_of_chance"] == pytest.approx(0.0622, rel=1e-2)
    assert ev["val_loss_min_epoch"] == 12
    assert ev["epochs_after_best"] == 138
    assert (ev["early_stop_at_epoch"], ev["early_stop_keeps_epoch"]) == (22, 12)
    # Either sign alone would do: the small rise confirmed by the errors, and the errors.
    assert "validation loss rose" in str(ev["why"])
    assert "the validation score is clearly worse" in str(ev["why"])


def test_the_memorizing_model_is_told_to_stop_early_first() -> None:
    spec = StudySpec.model_validate(
        {
            "name": "s",
            "dataset": {"name": "digits", "val_fraction": 0.5, "test_fraction": 0.3},
            "objective": {"metric": "val_loss", "direction": "minimize", "max_epochs": 150},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            "fixed": {"hidden_layers": 3, "hidden_units": 512, "batch_size": 32},
            "budget": {"n_trials": 1},
        }
    )
    ctx = RemedyContext(config={**spec.fixed, "lr": 1e-3}, spec=spec)
    (finding,) = with_remedies(diagnose(MEMORIZED_RUN), ctx)
    remedies = finding["remedies"]
    assert remedies[0] == (
        "stop early: val_loss was best at epoch 12 of 150; with early_stopping_patience 10 "
        "this trial would have stopped at epoch 22 and kept epoch 12's weights"
    )
    assert remedies[1].startswith("raise early_stopping_patience")
    assert any(r.startswith("raise dropout") for r in remedies)
    assert any(r.startswith("lower hidden_units") for r in remedies)


# ---- the bias/variance picture, case by case ---------------------------------------------


@dataclass
class Case:
    name: str
    curves: dict[str, list[float]]
    verdict: str
    n_classes: int = 10
    n_val: int | None = None
    kept_epoch: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # expected values
    why: str = ""  # expected in evidence["why"]


CASES = [
    Case("small gaps in loss and in error: good fit", curves(*GOOD_LOSSES, 0.99, 0.98), "good_fit"),
    Case(
        "error gap 6% of chance: overfit although the losses look fine",
        curves(*GOOD_LOSSES, 1.0, 0.946),
        "overfit",
        why="the validation score is clearly worse",
    ),
    Case(
        "error gap 4% of chance: inconclusive, leaning to variance",
        curves(*GOOD_LOSSES, 1.0, 0.964),
        "inconclusive",
        evidence={"leans": "variance"},
        why="a good fit is within 2.5%, overfitting from 5.0%",
    ),
    Case(
        "the same 4-point gap on 2 classes is 8% of chance: overfit",
        curves(plateau(0.7, 0.05, 20), plateau(0.7, 0.15, 20), 1.0, 0.96),
        "overfit",
        n_classes=2,
        evidence={"chance_error": 0.5, "error_gap_of_chance": 0.08},
    ),
    Case(
        "2 of 36 validation rows wrong is within noise: good fit",
        curves(plateau(1.1, 0.05, 20), plateau(1.1, 0.15, 20), 1.0, 0.944),
        "good_fit",
        n_classes=3,
        n_val=36,
    ),
    Case(
        "the same 5.6 points on 3600 validation rows is not noise: overfit",
        curves(plateau(1.1, 0.05, 20), plateau(1.1, 0.15, 20), 1.0, 0.944),
        "overfit",
        n_classes=3,
        n_val=3600,
    ),
    Case(
        "a loss gap over 0.3 nats (2.6x) with a small error gap: inconclusive",
        curves(plateau(2.0, 0.2, 20), plateau(2.0, 0.52, 20), 0.99, 0.98),
        "inconclusive",
        why="nats above training",
    ),
    Case(
        "training error 25% of chance, loss under the underfit level: leaning to bias",
        curves(plateau(2.3, 0.8, 20), plateau(2.3, 0.85, 20), 0.775, 0.765),
        "inconclusive",
        evidence={"leans": "bias"},
        why="bias left",
    ),
    Case(
        "training error 45% of chance with the loss under the underfit level: underfit",
        curves(plateau(2.3, 0.85, 20), plateau(2.3, 0.88, 20), 0.595, 0.585),
        "underfit",
    ),
    Case(
        "accuracy not recorded: the fit cannot be confirmed, never good_fit",
        curves(*GOOD_LOSSES, None, None),
        "inconclusive",
        why="accuracy was not recorded",
    ),
    Case(
        "one low epoch at the minimum and one high at the end are not a rise",
        curves(
            plateau(2.0, 0.05, 20),
            [*plateau(2.0, 0.28, 16), 0.25, 0.28, 0.285, 0.33],
            0.995,
            0.985,
        ),
        "good_fit",
    ),
    Case(
        "early stopping kept epoch 8: the verdict reads the kept epoch",
        curves(plateau(2.0, 0.05, 20), rise_after(0.15, 8, 0.6, 20), 0.99, 0.98),
        "good_fit",
        kept_epoch=8,
        evidence={"kept_epoch": 8},
    ),
    Case(
        "without it the same curves are overfit",
        curves(plateau(2.0, 0.05, 20), rise_after(0.15, 8, 0.6, 20), 0.99, 0.98),
        "overfit",
    ),
    Case(
        "a trial pruned after 2 epochs: too few to tell, and it says so",
        curves([2.0, 1.5], [2.0, 1.6], 0.4, 0.38),
        "inconclusive",
        evidence={"epochs_run": 2, "leans": "none"},
        why="too few to read a shape",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_verdict_reads_bias_and_variance_in_loss_and_error(case: Case) -> None:
    run = TrialRun(
        curves=case.curves,
        n_classes=case.n_classes,
        n_val=case.n_val,
        max_epochs=len(case.curves["train_loss"]),
        kept_epoch=case.kept_epoch,
        state="pruned",  # no still_improving: only the fit is under test
    )
    findings = {f.kind: f for f in diagnose(run)}
    assert set(findings) & set(FIT_KINDS) == {case.verdict}, set(findings)
    ev = findings[case.verdict].evidence
    for name, expected in case.evidence.items():
        if isinstance(expected, str):
            assert ev[name] == expected, name
        else:
            assert ev[name] == pytest.approx(expected, rel=1e-3), name
    assert case.why in str(ev.get("why", "")), ev


def test_early_stopping_is_not_advised_to_a_trial_that_used_it() -> None:
    spec = StudySpec.model_validate(
        {"name": "s", "dataset": {"name": "digits"}, "budget": {"n_trials": 1}}
    )
    rising = curves(plateau(2.0, 0.01, 20), rise_after(0.5, 8, 0.8, 20), 1.0, 0.9)
    for kept, advised in ((None, True), (18, False)):
        run = TrialRun(curves=rising, n_classes=10, kept_epoch=kept, monitor="val_loss")
        ctx = RemedyContext(config={"early_stopping_patience": 10 if kept else 0}, spec=spec)
        (overfit,) = (f for f in with_remedies(diagnose(run), ctx) if f["kind"] == "overfit")
        mentions = any("early_stopping_patience" in r for r in overfit["remedies"])
        assert mentions == advised, overfit["remedies"]


# ---- the kind: every readable trial gets one honest verdict -------------------------------


@st.composite
def runs(draw: st.DrawFn) -> TrialRun:
    """Runs of every shape: falling, memorizing, rising, flat; any gap in loss and error."""
    n = draw(st.integers(1, 40))
    k = draw(st.integers(2, 10))
    chance = math.log(k)
    start = draw(st.floats(0.5, 1.5)) * chance
    train_end = draw(st.floats(1e-6, 1.2)) * chance
    val_min = train_end + draw(st.floats(-0.2, 1.0)) * chance
    val_min = max(val_min, 1e-3)
    at = draw(st.integers(1, n))
    val_end = val_min * (1 + draw(st.floats(0.0, 1.0)))
    if n == 1:
        val = [val_min]
    else:
        val = rise_after(val_min, at, val_end, n) if 1 < at < n else linear(start, val_min, n)
    train = plateau(start, train_end, n, tau=draw(st.floats(0.5, 10.0)))
    train_acc = draw(st.floats(1 / k, 1.0))
    val_acc = min(max(train_acc - draw(st.floats(-0.1, 0.5)), 0.0), 1.0)
    c = curves(train, val, train_acc, val_acc)
    if draw(st.booleans()):
        del c["train_accuracy"], c["val_accuracy"]
    return TrialRun(
        curves=c,
        n_classes=k,
        n_val=draw(st.one_of(st.none(), st.integers(10, 5000))),
        max_epochs=n,
        state=draw(st.sampled_from(["complete", "pruned"])),
    )


@settings(max_examples=300, deadline=None)
@given(runs())
def test_every_readable_trial_gets_one_fit_verdict_and_good_fit_means_every_term_small(
    run: TrialRun,
) -> None:
    findings = diagnose(run)
    fit_findings = [f for f in findings if f.kind in FIT_KINDS]
    others = [f for f in findings if f.kind not in FIT_KINDS and SEVERITY[f.kind] != "info"]
    assert len(fit_findings) <= 1
    if not others:  # neither clearly bad elsewhere: never nothing
        assert len(fit_findings) == 1, findings
    if not fit_findings:
        return
    (f,) = fit_findings
    ev = f.evidence
    if f.kind == "good_fit":
        assert run.n_classes is not None
        chance_error = 1 - 1 / run.n_classes
        noise = float(ev.get("val_error_noise", 0.0))
        assert {"train_error", "val_error", "error_gap"} <= set(ev), "confirmed in error terms"
        assert float(ev["error_gap"]) <= max(
            GOOD_FIT_MAX_ERROR_GAP * chance_error, NOISE_Z * noise
        ) * (1 + 1e-3)
        assert float(ev["train_error"]) <= GOOD_FIT_MAX_TRAIN_ERROR * chance_error * (1 + 1e-3)
        assert float(ev["final_gap"]) <= GOOD_FIT_MAX_GAP_NATS * (1 + 1e-3)
        assert float(ev["train_loss_drop"]) >= 0.3 and float(ev["val_loss_drop"]) >= 0.3
    else:
        assert ev.get("why"), f  # every other verdict says why in words
    if f.kind == "inconclusive":
        assert ev["leans"] in ("variance", "bias", "none")


# ---- early stopping, replayed on a curve, is the trainer's own --------------------------


@pytest.mark.parametrize(("monitor", "patience"), [("val_loss", 3), ("val_accuracy", 5)])
def test_replayed_early_stopping_matches_the_trainer(monitor: str, patience: int) -> None:
    torch.set_num_threads(1)
    data = subsample(TensorData.from_splits(load_dataset("digits", seed=0), "cpu"), 0.1, 0)
    params = {"hidden_units": 256, "batch_size": 128, "early_stopping_patience": patience}
    config = TrainConfig.from_params(params, max_epochs=60, seed=0, monitor=monitor)
    result = fit(config, data)
    assert result.stopped_early  # a 256-unit MLP on 107 rows overfits within 60 epochs
    mode = "max" if monitor.endswith("accuracy") else "min"
    replayed = early_stop(result.curves[monitor], patience, mode)
    assert replayed == (result.epochs_run, result.best_epoch)


def test_the_report_names_the_side_an_inconclusive_trial_leans_to() -> None:
    best = [
        {
            "kind": "inconclusive",
            "evidence": {"leans": "variance"},
            "remedies": ["raise dropout (dropout regularizes; this trial 0.1)"],
        }
    ]
    text = _advice(
        3, Counter({"inconclusive": 2, "overfit": 1}), (1, 0.96, "val_accuracy"), best, {}, []
    )
    assert "shows inconclusive (leaning to variance); first remedy: raise dropout" in text
    assert "Most trials are neither a good fit nor clearly over- or underfit" in text


def test_moves_follow_the_evidence() -> None:
    first = [m.param for m in moves_for("overfit", {"early_stop_at_epoch": 22})]
    assert first[0] == "early_stopping_patience"
    # Patience 10 would not have stopped it before the end: early stopping keeps its place.
    later = [m.param for m in moves_for("overfit", {"epochs_after_best": 3})]
    assert later[0] == "dropout" and "early_stopping_patience" in later
    assert EARLY_STOPPING not in moves_for("overfit", {"kept_epoch": 8})
    assert moves_for("inconclusive", {"leans": "variance"}) == REGULARIZE[:3]
    assert moves_for("inconclusive", {"leans": "bias"}) == CAPACITY[:3]
    assert moves_for("inconclusive", {"leans": "none"}) == ()
