"""Optimization side of the trainer checked against its formulas (TECHNIQUES.md §5-8):
L1 and decoupled decay, learning-rate schedules, gradient clipping, early stopping,
gradient-health telemetry and divergence."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainer.config import TrainConfig
from trainer.data import TensorData, load_dataset
from trainer.gradcheck import check_gradients
from trainer.loop import CURVE_METRICS, DivergedError, EpochMetrics, fit
from trainer.model import TrainerModel, build_mlp, weight_layers
from trainer.optim import build_optimizer, clip_gradients, l1_penalty, weight_params
from trainer.schedules import EpochSchedule

LR, LAM = 0.1, 0.05


@pytest.fixture(scope="module")
def moons() -> TensorData:
    return TensorData.from_splits(load_dataset("moons", n_samples=300, seed=0), "cpu")


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return TensorData.from_splits(load_dataset("digits", seed=0), "cpu")


def _mlp64(seed: int = 0, activation: str = "tanh") -> TrainerModel:
    torch.manual_seed(seed)
    cfg = TrainConfig(hidden_layers=2, hidden_units=5, activation=activation)
    return build_mlp(cfg, 4, 3).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (16,), generator=g
    )


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


# --------------------------------------------------------------------------------------
# Penalties and decay
# --------------------------------------------------------------------------------------


def test_l1_adds_lambda_sign_w_to_the_gradient_of_weights_only() -> None:
    model, (x, y) = _mlp64(), _batch()
    with torch.no_grad():
        model.head.weight[0, 0] = 0.0  # sign(0) = 0
    plain = _grads(model, F.cross_entropy(model(x), y))
    penalized = _grads(model, F.cross_entropy(model(x), y) + LAM * l1_penalty(weight_params(model)))
    for p, g0, g1 in zip(model.parameters(), plain, penalized, strict=True):
        extra = LAM * torch.sign(p.detach()) if p.ndim >= 2 else torch.zeros_like(p)
        torch.testing.assert_close(g1 - g0, extra, rtol=0, atol=1e-15)
    assert float(l1_penalty(weight_params(model)).detach()) == pytest.approx(
        sum(float(p.detach().abs().sum()) for p in model.parameters() if p.ndim >= 2), rel=1e-14
    )


def test_gradcheck_of_the_cost_with_the_l1_term() -> None:
    """Central differences agree with backprop through cross-entropy + λ·Σ|W| (away from
    W = 0, where |w| has its kink)."""
    g = torch.Generator().manual_seed(0)

    def away_from_zero(*shape: int) -> torch.Tensor:
        w = torch.randn(*shape, generator=g, dtype=torch.float64)
        return w + 0.1 * torch.sign(w)

    w1, w2 = away_from_zero(5, 4), away_from_zero(3, 5)
    x, y = _batch()

    def cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(torch.tanh(x @ a.T) @ b.T, y)
        return ce + LAM * l1_penalty([a, b])

    assert check_gradients(cost, [w1, w2]).ok()


def _train(model: nn.Module, cfg: TrainConfig, steps: int = 3) -> nn.Module:
    opt = build_optimizer(cfg, model)
    x, y = _batch()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        opt.step()
    return model


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.allclose(p, q, rtol=1e-12, atol=1e-14)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def test_coupled_l2_and_decoupled_decay_give_different_adam_steps() -> None:
    def adam(mode: str, name: str = "adam") -> nn.Module:
        cfg = TrainConfig(optimizer=name, lr=LR, weight_decay=LAM, weight_decay_mode=mode)
        return _train(_mlp64(), cfg)

    coupled, decoupled = adam("coupled"), adam("decoupled")
    assert not _same(coupled, decoupled)
    assert _same(decoupled, adam("coupled", "adamw"))  # adam + decoupled decay is AdamW
    assert not _same(adam("coupled", "nadam"), adam("decoupled", "nadam"))


def test_decoupled_sgd_is_coupled_sgd_with_half_lambda_but_momentum_differs() -> None:
    """Plain SGD: θ(1-ηλ) - ηg equals θ - η(g + 2·(λ/2)·θ); with momentum they differ."""

    def run(name: str, lam: float, mode: str) -> nn.Module:
        cfg = TrainConfig(optimizer=name, lr=LR, weight_decay=lam, weight_decay_mode=mode)
        return _train(_mlp64(), cfg)

    assert _same(run("sgd", LAM, "decoupled"), run("sgd", LAM / 2, "coupled"))
    assert not _same(run("momentum", LAM, "decoupled"), run("momentum", LAM / 2, "coupled"))


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------

ETA0 = 0.1


@pytest.mark.parametrize(
    ("overrides", "formula"),
    [
        ({"lr_schedule": "none"}, lambda t: ETA0),
        ({"lr_schedule": "exponential", "lr_decay_k": 0.3}, lambda t: ETA0 * math.exp(-0.3 * t)),
        (
            {"lr_schedule": "step", "lr_step_gamma": 0.5, "lr_step_every": 2},
            lambda t: ETA0 * 0.5 ** (t // 2),
        ),
        ({"lr_schedule": "inverse_time", "lr_decay_k": 0.7}, lambda t: ETA0 / (1 + 0.7 * t)),
    ],
)
def test_schedule_lr_curve_equals_formula_at_epochs_0_to_5(
    moons: TensorData, overrides: dict[str, object], formula: object
) -> None:
    cfg = TrainConfig(
        optimizer="sgd",
        lr=ETA0,
        hidden_layers=1,
        hidden_units=4,
        batch_size=256,
        max_epochs=6,
        telemetry=False,
        **overrides,  # type: ignore[arg-type]
    )
    result = fit(cfg, moons)
    assert callable(formula)
    assert result.curves["lr"] == pytest.approx([formula(t) for t in range(6)], rel=1e-12)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_reduce_on_plateau_reduces_after_patience_epochs_without_improvement(mode: str) -> None:
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8]
    if mode == "max":
        metrics = [-m for m in metrics]
    factor, patience = 0.5, 1
    lin = nn.Linear(2, 2)
    cfg = TrainConfig(
        lr=ETA0,
        lr_schedule="reduce_on_plateau",
        lr_plateau_factor=factor,
        lr_plateau_patience=patience,
        monitor="val_loss" if mode == "min" else "val_accuracy",
    )
    opt = build_optimizer(cfg, lin)
    schedule = EpochSchedule(cfg, opt)
    # Reference: η <- factor·η once more than `patience` epochs passed without a new best.
    eta, best, bad, want, got = ETA0, math.inf, 0, [], []
    for m in metrics:
        score = m if mode == "min" else -m
        if score < best * (1 - 1e-4):
            best, bad = score, 0
        else:
            bad += 1
        if bad > patience:
            eta, bad = eta * factor, 0
        want.append(eta)
        schedule.step(m)
        got.append(opt.param_groups[0]["lr"])
    assert got == pytest.approx(want, rel=1e-12)
    assert want[-1] < ETA0 / 2  # the sequence does trigger (two) reductions


# --------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------


def _params_with_grads(scale: float) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    params = [
        nn.Parameter(torch.zeros(4, 3, dtype=torch.float64)),
        nn.Parameter(torch.zeros(5, dtype=torch.float64)),
    ]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64) * scale
    return params


def _global_norm(params: list[nn.Parameter]) -> float:
    return math.sqrt(sum(float((p.grad**2).sum()) for p in params if p.grad is not None))


def test_norm_clipping_rescales_to_the_threshold_and_keeps_the_direction() -> None:
    params = _params_with_grads(10.0)
    before = [p.grad.clone() for p in params if p.grad is not None]
    norm = _global_norm(params)
    assert norm > 1.0
    clip_gradients(params, "norm", 1.0)
    assert _global_norm(params) == pytest.approx(1.0, rel=1e-6)
    for b, p in zip(before, params, strict=True):
        torch.testing.assert_close(p.grad, b / norm, rtol=1e-6, atol=0)
    small = _params_with_grads(0.01)
    kept = [p.grad.clone() for p in small if p.grad is not None]
    clip_gradients(small, "norm", 1.0)
    for k, p in zip(kept, small, strict=True):
        assert torch.equal(k, p.grad)


def test_value_clipping_clamps_each_element() -> None:
    params = _params_with_grads(2.0)
    before = [p.grad.clone() for p in params if p.grad is not None]
    clip_gradients(params, "value", 0.5)
    for b, p in zip(before, params, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, b.clamp(-0.5, 0.5), rtol=0, atol=0)
        assert bool((p.grad.abs() <= 0.5).all()) and bool((b.abs() > 0.5).any())


@pytest.mark.parametrize("clip", ["none", "value", "norm"])
def test_one_full_batch_step_of_fit_is_sgd_on_clipped_cost_plus_l1(
    moons: TensorData, clip: str
) -> None:
    """fit's step: W <- W - η·clip(∇CE + λ·sign(W)), checked against a hand-made step."""
    start: dict[str, TrainerModel] = {}
    cfg = TrainConfig(
        optimizer="sgd",
        lr=LR,
        l1=LAM,
        grad_clip=clip,
        grad_clip_threshold=0.05,
        hidden_layers=1,
        hidden_units=8,
        batch_size=10_000,
        max_epochs=1,
    )
    result = fit(cfg, moons, prepare_model=lambda m: start.setdefault("m", copy.deepcopy(m)))
    ref = start["m"]
    loss = F.cross_entropy(ref(moons.x_train), moons.y_train)
    params = list(ref.parameters())
    grads = torch.autograd.grad(loss, params)
    grads = [
        g + LAM * torch.sign(p.detach()) if p.ndim >= 2 else g
        for p, g in zip(params, grads, strict=True)
    ]
    if clip == "value":
        grads = [g.clamp(-0.05, 0.05) for g in grads]
    elif clip == "norm":
        total = torch.sqrt(sum((g**2).sum() for g in grads))  # type: ignore[arg-type]
        assert float(total) > 0.05
        grads = [g * min(1.0, 0.05 / float(total)) for g in grads]
    with torch.no_grad():
        for p_ref, g, p in zip(params, grads, result.model.parameters(), strict=True):
            torch.testing.assert_close(p, p_ref - LR * g, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Early stopping
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_early_stopping_restores_exactly_the_best_epochs_weights(
    moons: TensorData, monitor: str
) -> None:
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    holder: dict[str, TrainerModel] = {}

    def on_epoch(m: EpochMetrics) -> None:
        snapshots[m.epoch] = copy.deepcopy(holder["model"].state_dict())

    patience, min_delta = 3, 1e-3
    cfg = TrainConfig(
        optimizer="adam",
        lr=0.05,
        hidden_layers=2,
        hidden_units=32,
        batch_size=32,
        max_epochs=40,
        early_stopping_patience=patience,
        early_stopping_min_delta=min_delta,
        monitor=monitor,
    )
    result = fit(cfg, moons, on_epoch, prepare_model=lambda m: holder.setdefault("model", m))
    curve = result.curves[monitor]
    sign = 1.0 if monitor == "val_loss" else -1.0
    # Reference: the first epoch that beat the best so far by more than min_delta, ...
    best_epoch, best, bad, stopped_at = 1, sign * curve[0], 0, None
    for epoch, v in enumerate(curve[1:], start=2):
        if sign * v < best - min_delta:
            best_epoch, best, bad = epoch, sign * v, 0
        else:
            bad += 1
            if bad >= patience:
                stopped_at = epoch
                break
    assert stopped_at is not None, curve  # the setting overfits quickly: it must stop
    assert result.stopped_early and result.epochs_run == stopped_at == best_epoch + patience
    assert result.best_epoch == best_epoch < result.epochs_run
    assert all(len(v) == stopped_at for v in result.curves.values())  # every epoch run
    restored = result.model.state_dict()
    assert restored.keys() == snapshots[best_epoch].keys()
    for k, v in snapshots[best_epoch].items():
        assert torch.equal(restored[k], v), k
    assert not all(torch.equal(restored[k], v) for k, v in snapshots[stopped_at].items())
    assert result.value(monitor) == curve[best_epoch - 1]


def test_without_early_stopping_the_model_is_the_last_epochs(moons: TensorData) -> None:
    result = fit(TrainConfig(hidden_layers=1, hidden_units=8, max_epochs=3), moons)
    assert result.best_epoch == result.epochs_run == 3 and not result.stopped_early
    assert result.value("val_loss") == result.curves["val_loss"][-1]


# --------------------------------------------------------------------------------------
# Telemetry
# --------------------------------------------------------------------------------------


def _telemetry_names(n_weight_layers: int, dead: list[int]) -> set[str]:
    names = {f"grad_norm.{i}" for i in range(n_weight_layers)}
    names |= {f"weight_norm.{i}" for i in range(n_weight_layers)}
    return names | {f"dead_fraction.{i}" for i in dead}


@pytest.mark.parametrize(("activation", "dead"), [("relu", [0, 1]), ("elu", [0, 1]), ("tanh", [])])
def test_telemetry_names_are_per_layer_and_can_be_switched_off(
    moons: TensorData, activation: str, dead: list[int]
) -> None:
    seen: list[set[str]] = []
    cfg = TrainConfig(hidden_layers=2, hidden_units=8, max_epochs=2, activation=activation)
    result = fit(cfg, moons, lambda m: seen.append(set(m.values)))
    want = set(CURVE_METRICS) | _telemetry_names(3, dead)
    assert seen == [want, want] and set(result.curves) == want
    off = fit(TrainConfig(hidden_layers=2, hidden_units=8, max_epochs=2, telemetry=False), moons)
    assert set(off.curves) == set(CURVE_METRICS)


def test_grad_and_weight_norms_equal_a_hand_computed_full_batch_step(moons: TensorData) -> None:
    start: dict[str, TrainerModel] = {}
    cfg = TrainConfig(
        optimizer="sgd", lr=LR, hidden_layers=2, hidden_units=8, batch_size=10_000, max_epochs=1
    )
    result = fit(cfg, moons, prepare_model=lambda m: start.setdefault("m", copy.deepcopy(m)))
    ref = start["m"]
    weights = [layer.weight for layer in weight_layers(ref)]
    grads = torch.autograd.grad(F.cross_entropy(ref(moons.x_train), moons.y_train), weights)
    for i, g in enumerate(grads):
        assert result.curves[f"grad_norm.{i}"][0] == pytest.approx(float(g.norm()), rel=1e-5)
    for i, layer in enumerate(weight_layers(result.model)):
        assert result.curves[f"weight_norm.{i}"][0] == pytest.approx(
            float(layer.weight.detach().norm()), rel=1e-5
        )


def test_dead_fraction_counts_units_never_positive_on_the_validation_split(
    moons: TensorData,
) -> None:
    units = 16

    def kill_half(model: TrainerModel) -> None:
        with torch.no_grad():
            weight_layers(model)[0].bias[: units // 2] = -1e4  # never positive, gradient 0

    cfg = TrainConfig(hidden_layers=1, hidden_units=units, activation="relu", max_epochs=2)
    result = fit(cfg, moons, prepare_model=kill_half)
    with torch.no_grad():
        hidden = result.model.blocks[0](moons.x_val)
    want = float((hidden <= 0).all(dim=0).double().mean())
    assert want >= 0.5
    assert result.curves["dead_fraction.0"][-1] == pytest.approx(want, abs=1e-12)


def _normal_001(model: TrainerModel) -> None:
    for layer in weight_layers(model):
        nn.init.normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(layer.bias)


def _he_normal(model: TrainerModel) -> None:
    for layer in weight_layers(model):
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)


def test_deep_sigmoid_net_with_tiny_init_shows_vanishing_gradients_he_relu_does_not(
    digits: TensorData,
) -> None:
    """10 weight layers: sigmoid + N(0, 0.01) starves the first layer of gradient."""

    def ratios(activation: str, init: object) -> list[float]:
        cfg = TrainConfig(
            hidden_layers=9,
            hidden_units=32,
            activation=activation,
            optimizer="sgd",
            lr=0.01,
            batch_size=128,
            max_epochs=2,
        )
        c = fit(cfg, digits, prepare_model=init).curves  # type: ignore[arg-type]
        return [
            first / last for first, last in zip(c["grad_norm.0"], c["grad_norm.9"], strict=True)
        ]

    assert all(r < 1e-2 for r in ratios("sigmoid", _normal_001))
    assert all(r >= 1e-2 for r in ratios("relu", _he_normal))


# --------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------


def test_divergence_message_names_the_epoch_and_the_loss() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g) * 1e6
    y = torch.arange(256) % 3
    data = TensorData(x, y, x[:64], y[:64], x[:0], y[:0], n_classes=3)
    cfg = TrainConfig(
        optimizer="sgd",
        lr=10.0,
        batch_size=32,
        hidden_layers=1,
        hidden_units=16,
        activation="leaky_relu",
        max_epochs=3,
    )
    with pytest.raises(DivergedError) as info:
        fit(cfg, data)
    assert str(info.value) in (
        "diverged at epoch 1: train_loss=nan",
        "diverged at epoch 1: train_loss=inf",
    )
