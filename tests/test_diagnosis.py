"""trainer.diagnosis on synthetic curves: every kind fires on its picture, and borderline
pictures just outside each threshold do not."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.analysis.remedies import RemedyContext, with_remedies
from service.studies.spec import StudySpec
from trainer import detectors, fit_verdict
from trainer import diagnosis as d
from trainer.diagnosis import CONFIRM_EPOCHS, KINDS, EarlyVerdict, TrialRun, diagnose


def plateau(start: float, end: float, n: int, tau: float = 2.0) -> list[float]:
    """end + (start - end)·e^(-t/tau): falls fast, then flat."""
    return [end + (start - end) * math.exp(-t / tau) for t in range(n)]


def linear(start: float, end: float, n: int) -> list[float]:
    return [start + (end - start) * t / (n - 1) for t in range(n)]


def zigzag(level: float, amplitude: float, n: int) -> list[float]:
    return [level * (1 + amplitude * (1 if t % 2 else -1)) for t in range(n)]


def rise_after(val_min: float, at: int, end: float, n: int) -> list[float]:
    """Falls to val_min at epoch `at` (1-based), then rises linearly to `end`."""
    down = plateau(2.0, val_min, at, tau=1.0)
    down[-1] = val_min
    return down + linear(val_min, end, n - at + 1)[1:]


GOOD_TRAIN = plateau(2.0, 0.05, 20)
GOOD_VAL = plateau(2.0, 0.15, 20)
# Accuracies of a good fit: 99% training, 98% validation (1.1% of the chance error apart).
GOOD_ACC = {"train_accuracy": plateau(0.1, 0.99, 20), "val_accuracy": plateau(0.1, 0.98, 20)}


def grads(first: list[float], last: list[float]) -> dict[str, list[float]]:
    """Two weight layers' gradient norms: layer 0 (input side) and layer 1 (head)."""
    return {"grad_norm.0": first, "grad_norm.1": last}


@dataclass
class Case:
    name: str
    curves: dict[str, list[float]]
    fires: set[str]
    not_fires: set[str] = field(default_factory=set)
    state: str = "complete"
    error: str | None = None
    n_classes: int | None = 10
    evidence: dict[str, Any] = field(default_factory=dict)  # expected values


def loss(train: list[float], val: list[float], **extra: list[float]) -> dict[str, list[float]]:
    return {"train_loss": train, "val_loss": val, **extra}


def good(**extra: list[float]) -> dict[str, list[float]]:
    """A good fit's curves (small gap in loss and in error), with `extra` curves."""
    return loss(GOOD_TRAIN, GOOD_VAL, **GOOD_ACC, **extra)


def accuracy(train: float, val: float, n: int = 20) -> dict[str, list[float]]:
    """Accuracy curves rising from chance (10 classes) to `train` and `val`."""
    return {"train_accuracy": plateau(0.1, train, n), "val_accuracy": plateau(0.1, val, n)}


CASES = [
    Case("good fit", good(), {"good_fit"}, set(KINDS) - {"good_fit"}),
    Case(
        "overfit: val minimum then a rise",
        loss(plateau(2.0, 0.01, 20), rise_after(0.5, 8, 0.8, 20)),
        {"overfit"},
        {"good_fit", "underfit", "still_improving"},
        # the rise: the median of the last 5 epochs (0.75) over the smallest 3-epoch median
        # (0.504)
        evidence={"val_loss_min_epoch": 8, "val_loss_min": 0.5, "val_loss_rise": 0.4889},
    ),
    Case(
        "not overfit: an 18% rise of a low loss is 0.02 nats",
        loss(plateau(2.0, 0.01, 20), rise_after(0.11, 8, 0.13, 20)),
        set(),
        {"overfit"},
    ),
    Case(
        "not overfit: an 8% rise is under OVERFIT_RISE",
        loss(plateau(2.0, 0.4, 20), rise_after(0.8, 8, 0.864, 20)),
        set(),
        {"overfit"},
    ),
    Case(
        "not overfit: the rise starts 2 epochs before the end",
        loss(plateau(2.0, 0.4, 20), rise_after(0.5, 18, 0.8, 20)),
        set(),
        {"overfit"},
    ),
    Case(
        "overfit: a large, growing gap without a rise",
        loss(plateau(2.0, 0.02, 20), plateau(2.0, 0.6, 20)),
        {"overfit"},
        {"good_fit"},
    ),
    Case(
        "underfit: both near chance level",
        loss(plateau(2.3, 2.1, 20), plateau(2.3, 2.15, 20)),
        {"underfit"},
        {"good_fit", "overfit"},
        evidence={"chance_loss": 2.303},
    ),
    Case(
        "not underfit: train loss 0.85 < 0.4 ln 10",
        loss(plateau(2.3, 0.85, 20), plateau(2.3, 0.9, 20)),
        set(),
        {"underfit"},
    ),
    Case(
        "not underfit: validation far above training is not 'both poor'",
        loss(plateau(2.3, 1.5, 20), plateau(2.3, 2.4, 20)),
        set(),
        {"underfit"},
    ),
    Case(
        "underfit without n_classes: training barely moved the loss",
        loss(linear(1.0, 0.9, 20), linear(1.05, 0.95, 20)),
        {"underfit"},
        n_classes=None,
    ),
    Case(
        "not underfit without n_classes: the loss fell 40%",
        loss(plateau(1.0, 0.6, 20), plateau(1.05, 0.62, 20)),
        set(),
        {"underfit"},
        n_classes=None,
    ),
    Case(
        "diverged: the trainer stopped on a NaN loss",
        loss([1.0, 0.8, 0.9], [1.0, 0.85, 0.95]),
        {"diverged"},
        {"good_fit", "overfit", "underfit", "oscillating"},
        state="fail",
        error="DivergedError: training loss became nan at epoch 4",
        evidence={"diverged_at_epoch": 4, "epochs_before_divergence": 3},
    ),
    Case(
        "diverged: finite loss grew 125x over its minimum",
        loss([1.0, 0.5, 0.4, 2.0, 10.0, 50.0], [1.0, 0.5, 0.4, 2.0, 10.0, 50.0]),
        {"diverged"},
        {"good_fit"},
        n_classes=None,
        evidence={"growth_over_min": 125.0},
    ),
    Case(
        "diverged: training loss 12x chance level",
        loss([30.0, 28.0, 27.6], [31.0, 29.0, 28.0]),
        {"diverged"},
        {"underfit", "good_fit"},
        evidence={"train_loss_over_chance": 11.99},
    ),
    Case(
        "not diverged: 5x chance level is a (bad) underfit",
        loss([11.5, 11.5, 11.5, 11.5], [11.6, 11.6, 11.6, 11.6]),
        {"underfit"},
        {"diverged"},
    ),
    Case(
        "not diverged: a 5x growth",
        loss([1.0, 0.5, 0.4, 0.6, 1.0, 2.0], [1.0, 0.5, 0.4, 0.6, 1.0, 2.0]),
        set(),
        {"diverged"},
    ),
    Case(
        "not diverged: a failure for another reason, before any epoch",
        {},
        set(),
        set(KINDS),
        state="fail",
        error="ValueError: Nesterov momentum requires a momentum and zero dampening",
    ),
    Case(
        "oscillating: the training loss zig-zags by 30%",
        loss(zigzag(1.0, 0.3, 20), zigzag(1.0, 0.3, 20)),
        {"oscillating"},
        {"good_fit"},
    ),
    Case(
        "not oscillating: 2% jitter on a plateau",
        loss(
            [v * (1 + 0.02 * (-1) ** t) for t, v in enumerate(GOOD_TRAIN)],
            GOOD_VAL,
            **GOOD_ACC,
        ),
        {"good_fit"},
        {"oscillating"},
    ),
    Case(
        "vanishing gradients: first layer 1e6 times weaker than the head",
        loss(plateau(2.3, 2.2, 10), plateau(2.3, 2.2, 10), **grads([1e-7] * 10, [0.1] * 10)),
        {"vanishing_gradients", "underfit"},
        {"exploding_gradients"},
        evidence={"first_to_last_grad_norm_ratio": 1e-6, "weight_layers": 2},
    ),
    Case(
        "not vanishing: first layer 100 times weaker",
        good(**grads([1e-3] * 20, [0.1] * 20)),
        {"good_fit"},
        {"vanishing_gradients"},
    ),
    Case(
        "exploding gradients: norms grew 1000x",
        good(**grads([10.0**t for t in range(4)] + [1e3] * 16, [1.0] * 20)),
        {"exploding_gradients"},
        {"vanishing_gradients", "good_fit"},
    ),
    Case(
        "exploding gradients: a non-finite norm",
        good(**grads([1.0] * 19 + [math.inf], [1.0] * 20)),
        {"exploding_gradients"},
    ),
    Case(
        "not exploding: norms grew 10x",
        good(**grads(linear(1.0, 10.0, 20), [1.0] * 20)),
        {"good_fit"},
        {"exploding_gradients"},
    ),
    Case(
        "dead units: 70% of layer 1 never fires",
        good(**{"dead_fraction.0": [0.1] * 20, "dead_fraction.1": linear(0.1, 0.7, 20)}),
        {"dead_units"},
        {"good_fit"},
        evidence={"max_dead_fraction": 0.7, "layer": 1},
    ),
    Case(
        "not dead units: 30%",
        good(**{"dead_fraction.0": [0.3] * 20}),
        {"good_fit"},
        {"dead_units"},
    ),
    Case(
        "unrepresentative validation: val loss half the train loss",
        loss(plateau(2.0, 0.4, 20), plateau(1.0, 0.2, 20)),
        {"unrepresentative_validation"},
        {"good_fit"},
        evidence={"val_over_train_loss": 0.5},
    ),
    Case(
        "unrepresentative validation: val noisy while train is smooth",
        loss(plateau(1.0, 0.5, 20), [0.55 * (1 + 0.3 * (-1) ** t) for t in range(20)]),
        {"unrepresentative_validation"},
        {"oscillating"},
    ),
    Case(
        "not unrepresentative: val 0.85x train",
        loss(plateau(2.0, 0.4, 20), plateau(1.7, 0.34, 20)),
        set(),
        {"unrepresentative_validation"},
    ),
    Case(
        "still improving: val fell 10% over the last 5 epochs, min at the end",
        loss(linear(1.0, 0.3, 20), linear(1.0, 0.35, 20)),
        {"still_improving"},
        {"overfit"},
        evidence={"val_loss_min_epoch": 20, "epochs_run": 20},
    ),
    Case(
        "not still improving: a pruned trial was stopped on purpose",
        loss(linear(1.0, 0.3, 20), linear(1.0, 0.35, 20)),
        set(),
        {"still_improving"},
        state="pruned",
    ),
    Case(
        "not still improving: 1% over the last 5 epochs",
        loss(linear(0.51, 0.5, 20), linear(0.505, 0.5, 20)),
        set(),
        {"still_improving"},
        n_classes=2,
    ),
    Case(
        "too few epochs: no shape to read, and it says so",
        loss([2.0, 1.0], [2.0, 3.0]),
        {"inconclusive"},
        set(KINDS) - {"inconclusive"},
        evidence={"epochs_run": 2},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kind_fires_only_on_its_picture(case: Case) -> None:
    findings = diagnose(
        TrialRun(
            curves=case.curves,
            state=case.state,
            error=case.error,
            n_classes=case.n_classes,
            max_epochs=20,
        )
    )
    kinds = {f.kind for f in findings}
    assert case.fires <= kinds, kinds
    assert not (case.not_fires & kinds), kinds
    for f in findings:
        assert f.severity == d.SEVERITY[f.kind]
        assert all(isinstance(v, int | float | str) for v in f.evidence.values())
    for name, expected in case.evidence.items():
        got = next(f.evidence[name] for f in findings if name in f.evidence)
        assert got == pytest.approx(expected, rel=1e-3), name


def test_every_kind_is_covered_by_a_case_that_fires() -> None:
    assert set().union(*(c.fires for c in CASES)) == set(KINDS)


def test_findings_are_ordered_most_severe_first() -> None:
    run = TrialRun(
        curves=loss(
            plateau(2.3, 2.2, 10),
            plateau(2.3, 2.2, 10),
            **grads([1e-7] * 10, [0.1] * 10),
        ),
        n_classes=10,
    )
    severities = [f.severity for f in diagnose(run)]
    order = {"critical": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=order.__getitem__)


# ---- remedies mapped onto the study's space --------------------------------------------

DIGITS_SPACE = {
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "activation": {"type": "categorical", "choices": ["relu", "elu"]},
}
FIXED = {"hidden_layers": 2, "hidden_units": 128}
OVERFIT_VAL = rise_after(0.5, 8, 0.8, 20)
# Validation accuracy peaks where the validation loss bottoms out (epoch 8): 0.875 -> 0.8.
OVERFIT_CURVES = loss(
    plateau(2.0, 0.01, 20),
    OVERFIT_VAL,
    train_accuracy=plateau(0.1, 1.0, 20),
    val_accuracy=[1 - v / 4 for v in OVERFIT_VAL],
)


DIGITS_SPEC = StudySpec.model_validate(
    {
        "name": "s",
        "dataset": {"name": "digits"},
        "objective": {"max_epochs": 20},
        "space": DIGITS_SPACE,
        "fixed": FIXED,
        "budget": {"n_trials": 1},
    }
)


def remedies(kind: str, curves: dict[str, list[float]], config: dict[str, Any]) -> list[str]:
    """service.analysis.remedies for the trainer's finding of `kind` in a digits study, its
    spec read back as the service stores it (every field set)."""
    run = TrialRun(curves=curves, n_classes=10, max_epochs=20, monitor=DIGITS_SPEC.objective.metric)
    stored = StudySpec.model_validate_json(DIGITS_SPEC.model_dump_json())
    ctx = RemedyContext(config={**FIXED, **config}, spec=stored)
    return next(f["remedies"] for f in with_remedies(diagnose(run), ctx) if f["kind"] == kind)


def snippet(remedy: str) -> dict[str, Any]:
    match = re.search(r"(\{.*\})$", remedy)
    assert match, remedy
    parsed: dict[str, Any] = json.loads(match.group(1))
    return parsed


def test_overfit_remedies_read_the_trial_and_its_space() -> None:
    r = remedies("overfit", OVERFIT_CURVES, {"dropout": 0.05, "lr": 0.01})
    # 12 epochs after the best one: early stopping leads, replayed on the objective's curve.
    assert r[0] == (
        "stop early: val_accuracy was best at epoch 8 of 20; with early_stopping_patience 10 "
        "this trial would have stopped at epoch 18 and kept epoch 8's weights"
    )
    assert r[1].startswith("raise early_stopping_patience (early stopping restores the best")
    assert r[2] == "raise dropout (dropout regularizes; this trial 0.05; space allows up to 0.5)"
    wd = next(x for x in r if x.startswith("raise weight_decay"))
    assert "this trial used the default 0" in wd
    assert snippet(wd) == {
        "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}
    }
    units = next(x for x in r if x.startswith("lower hidden_units"))
    assert "fixed at 128" in units and "move it from fixed to space" in units
    assert any("learning-curve" in x for x in r)
    assert not any("augment" in x for x in r)  # not image data as far as the study says


def test_a_value_at_the_edge_of_the_space_asks_to_widen_it() -> None:
    r = remedies("overfit", OVERFIT_CURVES, {"dropout": 0.5})
    dropout = next(x for x in r if "dropout" in x)
    assert dropout.startswith("raise dropout beyond the space")
    # dropout must stay < 1; the entry as written, with no "step": null of a stored spec
    assert snippet(dropout) == {"dropout": {"type": "float", "low": 0.0, "high": 0.99}}
    r = remedies(
        "oscillating",
        loss(zigzag(1.0, 0.3, 20), zigzag(1.0, 0.3, 20)),
        {"lr": 1e-4, "batch_size": 32},
    )
    assert r[0].startswith("lower lr beyond the space")
    assert snippet(r[0])["lr"]["low"] == pytest.approx(1e-5)
    batch = next(x for x in r if x.startswith("raise batch_size"))
    assert "space.batch_size has 64, 128" in batch


def test_remedy_snippets_are_valid_spec_entries() -> None:
    r = remedies("overfit", OVERFIT_CURVES, {"dropout": 0.5})
    r += remedies("underfit", loss(plateau(2.3, 2.1, 20), plateau(2.3, 2.15, 20)), {})
    for text in r:
        if not text.endswith("}"):
            continue
        ((param, dist),) = snippet(text).items()
        if param not in {"dropout", "weight_decay", "lr", "hidden_units", "hidden_layers"}:
            continue  # parameters of other issues' trainer features
        space = {**DIGITS_SPACE, param: dist}
        fixed = {k: v for k, v in FIXED.items() if k != param}
        StudySpec.model_validate(
            {
                "name": "s",
                "dataset": {"name": "digits"},
                "space": space,
                "fixed": fixed,
                "budget": {"n_trials": 1},
            }
        )


def test_nothing_to_lower_is_not_a_remedy() -> None:
    r = remedies("underfit", loss(plateau(2.3, 2.1, 20), plateau(2.3, 2.15, 20)), {"dropout": 0.0})
    assert not any(x.startswith("lower dropout") for x in r)
    assert not any(x.startswith("lower weight_decay") for x in r)  # default 0
    r = remedies("underfit", loss(plateau(2.3, 2.1, 20), plateau(2.3, 2.15, 20)), {"dropout": 0.3})
    assert "lower dropout (less regularization; this trial 0.3; space allows down to 0)" in r


def test_categorical_remedies_use_the_space_choices() -> None:
    dead = good(**{"dead_fraction.0": [0.8] * 20})
    r = remedies("dead_units", dead, {"activation": "relu"})
    assert r[0].startswith("try activation elu (")
    assert "in space.activation" in r[0]
    r = remedies("dead_units", dead, {"activation": "elu"})
    assert not any(x.startswith("try activation") for x in r)  # already a remedy's choice


def test_init_std_is_only_advised_for_normal_init() -> None:
    vanishing = loss(plateau(2.3, 2.2, 10), plateau(2.3, 2.2, 10), **grads([1e-7] * 10, [0.1] * 10))
    r = remedies("vanishing_gradients", vanishing, {"activation": "sigmoid"})
    assert not any("init_std" in x for x in r)
    assert any(x.startswith("try activation relu or elu") for x in r)
    r = remedies("vanishing_gradients", vanishing, {"init": "normal", "init_std": 0.01})
    assert any(x.startswith("raise init_std (") and "this trial 0.01" in x for x in r)


def test_thresholds_are_named_constants() -> None:
    for module, names in (
        (
            detectors,
            (
                "DIVERGE_GROWTH",
                "OSC_SIGN_FLIP_FRACTION",
                "VANISHING_RATIO",
                "EXPLODING_GROWTH",
                "DEAD_FRACTION",
                "UNREP_VAL_RATIO",
                "STILL_IMPROVING_DROP",
            ),
        ),
        (
            fit_verdict,
            (
                "OVERFIT_RISE",
                "OVERFIT_ERROR_GAP",
                "OVERFIT_ERROR_RATIO",
                "UNDERFIT_CHANCE_FRACTION",
                "GOOD_FIT_MAX_GAP_NATS",
                "GOOD_FIT_MAX_ERROR_GAP",
                "GOOD_FIT_MAX_TRAIN_ERROR",
                "NOISE_Z",
            ),
        ),
    ):
        for name in names:
            assert isinstance(getattr(module, name), float), name


# ---- early verdicts: stop hopeless trials ----------------------------------------------


def follow(epochs: list[dict[str, float]], n_classes: int | None = 3) -> list[str | None]:
    verdict = EarlyVerdict(n_classes=n_classes)
    return [verdict.update(values) for values in epochs]


def test_a_diverged_trial_is_stopped_after_three_epochs_in_a_row() -> None:
    # Adam with lr 0.5 on wine, as trained: ~1000x chance level and not coming down.
    reasons = follow([{"train_loss": v, "val_loss": v} for v in (1901.5, 1244.2, 2706.0, 155.4)])
    assert reasons[: CONFIRM_EPOCHS - 1] == [None] * (CONFIRM_EPOCHS - 1)
    assert reasons[CONFIRM_EPOCHS - 1] is not None
    assert reasons[CONFIRM_EPOCHS - 1].startswith("diverged for 3 epochs in a row")
    assert "train_loss_over_chance=2463" in reasons[CONFIRM_EPOCHS - 1]


def test_a_recovering_or_spiking_trial_is_not_stopped() -> None:
    # RMSprop with lr 1 on wine blew up in epoch 1 and came down to 0 by epoch 8.
    recovering = (5486142.8, 275957.8, 116588.2, 73549.3, 44228.5, 24759.6, 7092.3, 0.001)
    assert follow([{"train_loss": v, "val_loss": v} for v in recovering]) == [None] * 8
    spike = (0.5, 0.3, 0.25, 9.0, 0.3, 0.2, 0.2)
    assert follow([{"train_loss": v, "val_loss": v} for v in spike]) == [None] * 7


def test_vanishing_gradients_stop_a_trial_only_while_it_does_not_learn() -> None:
    stuck = [{"train_loss": 2.30, "val_loss": 2.30, "grad_norm.0": 1e-8, "grad_norm.1": 0.1}] * 4
    reasons = follow(stuck, n_classes=10)
    assert reasons[:2] == [None, None]
    assert reasons[2] is not None and reasons[2].startswith("vanishing_gradients")
    learning = [
        {
            "train_loss": 2.3 * 0.8**t,
            "val_loss": 2.3 * 0.8**t,
            "grad_norm.0": 1e-8,
            "grad_norm.1": 0.1,
        }
        for t in range(6)
    ]
    assert follow(learning, n_classes=10) == [None] * 6
