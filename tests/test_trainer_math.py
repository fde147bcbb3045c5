"""The trainer's math checked against the formulas in TECHNIQUES.md.

Optimizer updates are recomputed by hand in float64 numpy; model structure, inverted
dropout, evaluation and the training loop are checked for observable outcomes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainer import loop
from trainer.config import TrainConfig
from trainer.data import TensorData, load_dataset
from trainer.loop import CURVE_METRICS, DivergedError, EpochMetrics, evaluate, fit
from trainer.model import TrainerModel, build_activation, build_mlp, build_model, weight_layers
from trainer.optim import build_optimizer
from trainer.params import OPTIMIZERS

LR = 0.1
BETA = 0.9  # momentum / nesterov β
LAM = 0.05  # L2 strength λ (cost + λ·ΣW²)
# Non-default optimizer hyperparameters, so the formulas also check that they are wired.
ADAM_B1, ADAM_B2, EPS = 0.85, 0.995, 1e-7
NADAM_PSI = 0.004  # PyTorch's momentum_decay
RMS_ALPHA, RMS_MOM = 0.95, 0.3
RHO, ADADELTA_EPS = 0.85, 1e-6
HYPER = {
    "momentum": BETA,
    "beta1": ADAM_B1,
    "beta2": ADAM_B2,
    "eps": EPS,
    "rmsprop_alpha": RMS_ALPHA,
    "rmsprop_momentum": RMS_MOM,
    "adadelta_rho": RHO,
}

Array = np.ndarray


# --------------------------------------------------------------------------------------
# Hand-written reference updates (float64 numpy). `c` is the coefficient added to the
# gradient for coupled L2 (2λ for weights, 0 for biases); `decoupled` is the λ of
# θ <- θ - η·λ·θ applied before the step.
# --------------------------------------------------------------------------------------


class _Ref:
    """One parameter's reference optimizer state and update."""

    def __init__(self, name: str, theta: Array, c: float, decoupled: float) -> None:
        self.name = name
        self.theta = theta.copy()
        self.c = c
        self.decoupled = decoupled
        self.t = 0
        self.v = np.zeros_like(theta)  # momentum buffer / Adam's 2nd moment / RMS s
        self.m = np.zeros_like(theta)  # Adam's 1st moment / RMSprop's momentum buffer
        self.u = np.zeros_like(theta)  # AdaDelta's running average of squared updates
        self.sum_sq = np.zeros_like(theta)  # AdaGrad Σg²
        self.mu_product = 1.0  # NAdam Πμ_i

    def step(self, g: Array) -> None:
        self.t += 1
        t = self.t
        th = self.theta * (1.0 - LR * self.decoupled)  # decoupled decay (0: none)
        d = g + self.c * self.theta  # gradient of J + λ·ΣW²  (c = 2λ on weights)
        name = self.name
        if name == "sgd":
            th = th - LR * d
        elif name == "momentum":
            self.v = BETA * self.v + d  # v <- βv + g
            th = th - LR * self.v
        elif name == "nesterov":
            # PyTorch's re-parameterised NAG: θ <- θ - η(g + βv) with v <- βv + g
            self.v = BETA * self.v + d
            th = th - LR * (d + BETA * self.v)
        elif name in ("adam", "adamw"):
            self.m = ADAM_B1 * self.m + (1 - ADAM_B1) * d
            self.v = ADAM_B2 * self.v + (1 - ADAM_B2) * d * d
            m_hat = self.m / (1 - ADAM_B1**t)
            v_hat = self.v / (1 - ADAM_B2**t)
            th = th - LR * m_hat / (np.sqrt(v_hat) + EPS)
        elif name == "nadam":
            # Dozat's NAdam with PyTorch's momentum schedule μ_t = β₁(1 - ½·0.96^(tψ)).
            mu = ADAM_B1 * (1 - 0.5 * 0.96 ** (t * NADAM_PSI))
            mu_next = ADAM_B1 * (1 - 0.5 * 0.96 ** ((t + 1) * NADAM_PSI))
            self.mu_product *= mu
            self.m = ADAM_B1 * self.m + (1 - ADAM_B1) * d
            self.v = ADAM_B2 * self.v + (1 - ADAM_B2) * d * d
            denom = np.sqrt(self.v / (1 - ADAM_B2**t)) + EPS
            th = th - LR * (1 - mu) / (1 - self.mu_product) * d / denom
            th = th - LR * mu_next / (1 - self.mu_product * mu_next) * self.m / denom
        elif name == "rmsprop":
            self.v = RMS_ALPHA * self.v + (1 - RMS_ALPHA) * d * d
            self.m = RMS_MOM * self.m + d / (np.sqrt(self.v) + EPS)
            th = th - LR * self.m
        elif name == "adagrad":
            self.sum_sq = self.sum_sq + d * d
            th = th - LR * d / (np.sqrt(self.sum_sq) + EPS)
        elif name == "adadelta":
            self.v = RHO * self.v + (1 - RHO) * d * d
            delta = np.sqrt(self.u + ADADELTA_EPS) / np.sqrt(self.v + ADADELTA_EPS) * d
            self.u = RHO * self.u + (1 - RHO) * delta * delta
            th = th - LR * delta
        else:  # pragma: no cover - the parametrization only uses known names
            raise AssertionError(name)
        self.theta = th


def _tiny_linear() -> nn.Linear:
    lin = nn.Linear(3, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=torch.float64))
        lin.bias.copy_(torch.tensor([0.3, -0.6], dtype=torch.float64))
    return lin


# Three steps with different known gradients: steps 2-3 exercise the optimizer state
# (momentum buffers, Adam's bias correction at t>1, accumulated squares, and a step whose
# second moments decrease, which would expose AMSGrad's running maximum).
GRADS_W = [
    np.array([[0.1, -0.2, 0.3], [-0.4, 0.5, 0.05]]),
    np.array([[-0.3, 0.1, 0.2], [0.25, -0.15, 0.4]]),
    np.array([[0.0, 0.01, -0.02], [0.0, 0.0, 0.03]]),  # small/zero: second moments shrink
]
GRADS_B = [np.array([0.7, -0.2]), np.array([-0.1, 0.35]), np.array([0.0, -0.01])]


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
@pytest.mark.parametrize("lam", [0.0, LAM])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_steps_match_hand_written_formulas(name: str, lam: float, mode: str) -> None:
    lin = _tiny_linear()
    cfg = TrainConfig(optimizer=name, lr=LR, weight_decay=lam, weight_decay_mode=mode, **HYPER)  # type: ignore[arg-type]
    opt = build_optimizer(cfg, lin)
    decoupled = mode == "decoupled" or name == "adamw"  # adamw is decoupled by definition
    ref_w = _Ref(
        name,
        lin.weight.detach().numpy(),
        c=0.0 if decoupled else 2.0 * lam,
        decoupled=lam if decoupled else 0.0,
    )
    # Biases never get any decay, coupled or decoupled.
    ref_b = _Ref(name, lin.bias.detach().numpy(), c=0.0, decoupled=0.0)
    # PyTorch keeps NAdam's Πμ_i in a float32 scalar even for float64 parameters.
    rtol = 1e-7 if name == "nadam" else 1e-12
    for gw, gb in zip(GRADS_W, GRADS_B, strict=True):
        lin.weight.grad = torch.from_numpy(gw.copy())
        lin.bias.grad = torch.from_numpy(gb.copy())
        opt.step()
        ref_w.step(gw)
        ref_b.step(gb)
        w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
        np.testing.assert_allclose(w, ref_w.theta, rtol=rtol, atol=1e-14)
        np.testing.assert_allclose(b, ref_b.theta, rtol=rtol, atol=1e-14)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_hyperparameters(name: str) -> None:
    cfg = TrainConfig(optimizer=name, lr=0.037, weight_decay=0.25, **{**HYPER, "momentum": 0.8})  # type: ignore[arg-type]
    opt = build_optimizer(cfg, _tiny_linear())
    weight_group, bias_group = opt.param_groups
    assert all(p.ndim >= 2 for p in weight_group["params"])
    assert all(p.ndim < 2 for p in bias_group["params"])
    assert len(weight_group["params"]) == 1 and len(bias_group["params"]) == 1
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(0.037)
    expected_wd = 0.25 if name == "adamw" else 0.5  # decoupled λ vs coupled 2λ
    assert weight_group["weight_decay"] == pytest.approx(expected_wd)
    assert bias_group["weight_decay"] == 0.0
    if name in ("momentum", "nesterov"):
        assert weight_group["momentum"] == pytest.approx(0.8)
        assert weight_group["nesterov"] is (name == "nesterov")
    if name == "sgd":
        assert weight_group["momentum"] == 0
    if name in ("adam", "adamw", "nadam"):
        assert weight_group["betas"] == (ADAM_B1, ADAM_B2)
        assert weight_group["eps"] == EPS
    if name in ("adam", "adamw"):
        assert not weight_group["amsgrad"]
    if name == "nadam":
        assert weight_group["momentum_decay"] == NADAM_PSI
        assert weight_group["decoupled_weight_decay"] is False
    if name == "rmsprop":
        assert weight_group["alpha"] == RMS_ALPHA
        assert weight_group["eps"] == EPS
        assert weight_group["momentum"] == RMS_MOM and not weight_group["centered"]
    if name == "adagrad":
        assert weight_group["eps"] == EPS
        assert weight_group["lr_decay"] == 0 and weight_group["initial_accumulator_value"] == 0
    if name == "adadelta":
        assert weight_group["rho"] == RHO and weight_group["eps"] == ADADELTA_EPS


def test_unknown_optimizer_raises() -> None:
    cfg = TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="lbfgs"):
        build_optimizer(cfg, _tiny_linear())


def _mlp64(seed: int = 0) -> TrainerModel:
    torch.manual_seed(seed)
    cfg = TrainConfig(hidden_layers=1, hidden_units=5, activation="tanh")
    return build_mlp(cfg, 4, 3).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    return x, y


def _l2(model: nn.Module) -> torch.Tensor:
    return sum((p**2).sum() for p in model.parameters() if p.ndim >= 2)  # type: ignore[return-value]


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "adamw"])
def test_coupled_weight_decay_equals_l2_term_in_loss(name: str) -> None:
    """weight_decay=λ behaves exactly like minimizing J + λ·ΣW² (weights only)."""
    x, y = _batch()
    decayed, penalized = _mlp64(), _mlp64()
    opt_decayed = build_optimizer(TrainConfig(optimizer=name, lr=LR, weight_decay=LAM), decayed)
    opt_penal = build_optimizer(TrainConfig(optimizer=name, lr=LR, weight_decay=0.0), penalized)
    for _ in range(3):
        opt_decayed.zero_grad()
        F.cross_entropy(decayed(x), y).backward()
        opt_penal.zero_grad()
        (F.cross_entropy(penalized(x), y) + LAM * _l2(penalized)).backward()
        # gradient of the penalized loss = plain gradient + 2λW on weights, + 0 on biases
        for p_dec, p_pen in zip(decayed.parameters(), penalized.parameters(), strict=True):
            extra = 2 * LAM * p_dec.detach() if p_dec.ndim >= 2 else 0.0
            torch.testing.assert_close(p_pen.grad, p_dec.grad + extra, rtol=1e-12, atol=1e-14)
        opt_decayed.step()
        opt_penal.step()
        for p_dec, p_pen in zip(decayed.parameters(), penalized.parameters(), strict=True):
            torch.testing.assert_close(p_dec, p_pen, rtol=1e-10, atol=1e-12)


def test_adamw_decay_is_decoupled_not_l2() -> None:
    """AdamW's decay is not Adam on J + λ·ΣW² (TECHNIQUES §5: the two differ)."""
    x, y = _batch()
    adamw, adam_l2 = _mlp64(), _mlp64()
    opt_w = build_optimizer(TrainConfig(optimizer="adamw", lr=LR, weight_decay=LAM), adamw)
    opt_l2 = build_optimizer(TrainConfig(optimizer="adam", lr=LR, weight_decay=LAM), adam_l2)
    for model, opt in ((adamw, opt_w), (adam_l2, opt_l2)):
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    w_adamw, w_l2 = adamw.head.weight.detach(), adam_l2.head.weight.detach()
    assert not torch.allclose(w_adamw, w_l2, rtol=1e-6, atol=1e-8)


def test_sgd_biases_get_no_decay_even_with_zero_gradient() -> None:
    lin = _tiny_linear()
    opt = build_optimizer(TrainConfig(optimizer="sgd", lr=LR, weight_decay=LAM), lin)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    lin.weight.grad = torch.zeros_like(lin.weight)
    lin.bias.grad = torch.zeros_like(lin.bias)
    opt.step()
    torch.testing.assert_close(lin.weight.detach(), w0 * (1 - LR * 2 * LAM), rtol=1e-14, atol=0)
    torch.testing.assert_close(lin.bias.detach(), b0, rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# model.build_mlp
# --------------------------------------------------------------------------------------


def _flat(model: TrainerModel) -> list[nn.Module]:
    """The model's layers in forward order: each block's children, then the head."""
    layers = [m for block in model.blocks for m in block.children()] + [model.head]
    return [m for m in layers if not isinstance(m, nn.Flatten)]


def test_build_model_flattens_shaped_inputs() -> None:
    model = build_model(TrainConfig(hidden_layers=1, hidden_units=3), (1, 8, 8), 10)
    assert weight_layers(model)[0].in_features == 64
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    ("hidden_layers", "dropout", "expected_types"),
    [
        (0, 0.0, [nn.Linear]),
        (0, 0.5, [nn.Linear]),
        (1, 0.0, [nn.Linear, nn.ReLU, nn.Linear]),
        (1, 0.3, [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]),
        (3, 0.0, [nn.Linear, nn.ReLU] * 3 + [nn.Linear]),
        (3, 0.2, [nn.Linear, nn.ReLU, nn.Dropout] * 3 + [nn.Linear]),
    ],
)
def test_build_mlp_structure(
    hidden_layers: int, dropout: float, expected_types: list[type[nn.Module]]
) -> None:
    cfg = TrainConfig(hidden_layers=hidden_layers, hidden_units=7, dropout=dropout)
    model = build_mlp(cfg, n_features=5, n_outputs=4)
    flat = _flat(model)
    assert [type(m) for m in flat] == expected_types
    assert len(model.blocks) == hidden_layers
    linears = [m for m in flat if isinstance(m, nn.Linear)]
    assert weight_layers(model) == linears
    assert len(linears) == hidden_layers + 1
    widths = [5] + [7] * hidden_layers + [4]
    for lin, (fan_in, fan_out) in zip(linears, itertools.pairwise(widths), strict=True):
        assert (lin.in_features, lin.out_features) == (fan_in, fan_out)
        assert lin.weight.shape == (fan_out, fan_in) and lin.bias.shape == (fan_out,)
    for m in flat:
        if isinstance(m, nn.Dropout):
            assert m.p == dropout
    out = model(torch.zeros(2, 5))
    assert out.shape == (2, 4)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("relu", nn.ReLU),
        ("tanh", nn.Tanh),
        ("sigmoid", nn.Sigmoid),
        ("leaky_relu", nn.LeakyReLU),
        ("elu", nn.ELU),
    ],
)
def test_build_mlp_uses_chosen_activation(name: str, cls: type[nn.Module]) -> None:
    model = build_mlp(TrainConfig(hidden_layers=2, hidden_units=3, activation=name), 2, 2)
    acts = [m for m in _flat(model) if not isinstance(m, nn.Linear | nn.Dropout)]
    assert len(acts) == 2
    assert all(type(a) is cls for a in acts)


def test_activation_formulas() -> None:
    z = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=torch.float64)
    zn = z.numpy()
    expected = {
        "relu": np.maximum(zn, 0),
        "tanh": np.tanh(zn),
        "sigmoid": 1 / (1 + np.exp(-zn)),
        "leaky_relu": np.where(zn < 0, 0.01 * zn, zn),
        "elu": np.where(zn < 0, 1.0 * (np.exp(zn) - 1), zn),
    }
    for name, want in expected.items():
        got = build_activation(name)(z).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=name)
    with pytest.raises(ValueError, match="swish"):
        build_activation("swish")


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_inverted_dropout_scales_survivors_in_train_mode(p: float) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(hidden_layers=1, hidden_units=2000, dropout=p, activation="sigmoid")
    model = build_mlp(cfg, 6, 3).double()
    dropout = _flat(model)[2]
    assert isinstance(dropout, nn.Dropout)
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen["in"], seen["out"] = inputs[0].detach(), output.detach()

    dropout.register_forward_hook(hook)
    x = torch.randn(8, 6, dtype=torch.float64)
    model.train()
    out = model(x)
    h, d = seen["in"], seen["out"]
    assert bool((h > 0).all())  # sigmoid: every hidden activation is non-zero
    kept = d != 0
    torch.testing.assert_close(d[kept], h[kept] / (1 - p), rtol=1e-14, atol=0)
    drop_rate = 1 - kept.double().mean().item()
    assert abs(drop_rate - p) < 0.02  # 16000 Bernoulli draws
    torch.testing.assert_close(out, model.head(d), rtol=1e-14, atol=0)


def test_dropout_is_identity_in_eval_mode() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(hidden_layers=2, hidden_units=32, dropout=0.5, activation="elu")
    model = build_mlp(cfg, 6, 3).double()
    no_dropout = nn.Sequential(*[m for m in _flat(model) if not isinstance(m, nn.Dropout)])
    x = torch.randn(10, 6, dtype=torch.float64)
    model.eval()
    first, second = model(x), model(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, no_dropout(x), rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(x), first)


# --------------------------------------------------------------------------------------
# loop.evaluate
# --------------------------------------------------------------------------------------


def _random_data(n: int, d: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("eval_batch", [4096, 7])
@pytest.mark.parametrize("start_training", [True, False])
def test_evaluate_matches_direct_cross_entropy_and_accuracy(
    monkeypatch: pytest.MonkeyPatch, eval_batch: int, start_training: bool
) -> None:
    monkeypatch.setattr(loop, "EVAL_BATCH", eval_batch)  # 7: uneven chunks of 50 rows
    torch.manual_seed(0)
    model = build_mlp(TrainConfig(hidden_layers=1, hidden_units=16, dropout=0.5), 5, 4).double()
    x, y = _random_data(50, 5, 4)
    x = x.double()
    model.train(start_training)
    loss, acc = evaluate(model, x, y)
    assert model.training is start_training
    model.eval()
    with torch.no_grad():
        logits = model(x)
    want_loss = F.cross_entropy(logits, y).item()
    want_acc = (logits.argmax(dim=1) == y).double().mean().item()
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert acc == pytest.approx(want_acc, abs=1e-15)
    # Independent of torch: -mean log softmax of the target logit.
    ln = logits.numpy()
    log_softmax = ln - ln.max(axis=1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_softmax[np.arange(50), y.numpy()].mean(), rel=1e-12)


def test_evaluate_does_not_track_gradients_or_change_weights() -> None:
    torch.manual_seed(0)
    model = build_mlp(TrainConfig(hidden_layers=1, hidden_units=4), 3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _random_data(20, 3, 2)
    evaluate(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    for b, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(b, p.detach())


# --------------------------------------------------------------------------------------
# loop.fit
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moons() -> TensorData:
    return TensorData.from_splits(load_dataset("moons", n_samples=300, seed=0), "cpu")


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return TensorData.from_splits(load_dataset("digits", seed=0), "cpu")


def _small_cfg(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        "hidden_layers": 1,
        "hidden_units": 16,
        "batch_size": 32,
        "lr": 0.01,
        "max_epochs": 4,
        "seed": 3,
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_fit_curves_have_one_value_per_epoch(moons: TensorData) -> None:
    epochs: list[int] = []

    def on_epoch(m: EpochMetrics) -> None:
        epochs.append(m.epoch)
        assert set(m.values) == set(result_names)

    # The base curves plus the telemetry of the 2 weight layers and the 1 ReLU block.
    telemetry = ["grad_norm.0", "grad_norm.1", "weight_norm.0", "weight_norm.1", "dead_fraction.0"]
    result_names = [*CURVE_METRICS, *telemetry]
    cfg = _small_cfg(max_epochs=4)
    result = fit(cfg, moons, on_epoch)
    assert epochs == [1, 2, 3, 4]
    assert result.epochs_run == 4 and not result.stopped_by_callback
    assert set(result.curves) == set(result_names)
    for name in result_names:
        assert len(result.curves[name]) == 4, name
        assert all(math.isfinite(v) for v in result.curves[name]), name
    assert result.curves["lr"] == [cfg.lr] * 4
    assert all(0.0 <= a <= 1.0 for a in result.curves["val_accuracy"])
    assert all(s >= 0.0 for s in result.curves["epoch_seconds"])
    # The last curve values describe the returned model.
    assert result.curves["val_loss"][-1] == pytest.approx(
        evaluate(result.model, moons.x_val, moons.y_val)[0], rel=1e-6
    )


def test_fit_callback_values_match_curves(moons: TensorData) -> None:
    reported: list[dict[str, float]] = []
    result = fit(_small_cfg(max_epochs=3), moons, lambda m: reported.append(dict(m.values)))
    for name in CURVE_METRICS:
        assert [r[name] for r in reported] == result.curves[name]


@pytest.mark.parametrize("stop_at", [1, 2])
def test_fit_callback_returning_true_stops(moons: TensorData, stop_at: int) -> None:
    calls: list[int] = []

    def on_epoch(m: EpochMetrics) -> bool:
        calls.append(m.epoch)
        return m.epoch == stop_at

    result = fit(_small_cfg(max_epochs=5), moons, on_epoch)
    assert calls == list(range(1, stop_at + 1))
    assert result.stopped_by_callback
    assert result.epochs_run == stop_at
    assert all(len(result.curves[name]) == stop_at for name in CURVE_METRICS)


def test_fit_callback_returning_none_or_false_does_not_stop(moons: TensorData) -> None:
    result = fit(_small_cfg(max_epochs=3), moons, lambda m: False if m.epoch == 1 else None)
    assert result.epochs_run == 3 and not result.stopped_by_callback


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fit_same_seed_same_curves(moons: TensorData, dropout: float) -> None:
    deterministic = [m for m in CURVE_METRICS if m != "epoch_seconds"]
    a = fit(_small_cfg(dropout=dropout), moons)
    b = fit(_small_cfg(dropout=dropout), moons)
    c = fit(_small_cfg(dropout=dropout, seed=4), moons)
    for name in deterministic:
        assert a.curves[name] == b.curves[name], name
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.curves["train_loss"] != c.curves["train_loss"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_lr_curve_equals_config_lr(moons: TensorData, optimizer: str) -> None:
    result = fit(_small_cfg(optimizer=optimizer, lr=0.0123, max_epochs=3), moons)
    assert result.curves["lr"] == [0.0123] * 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_raises_diverged_error_for_absurd_lr(seed: int) -> None:
    """SGD with η=10 on inputs of scale 1e6 overflows to inf/nan within the first epoch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g) * 1e6
    y = torch.arange(256) % 3
    data = TensorData(x, y, x[:64], y[:64], x[:0], y[:0], n_classes=3)
    # leaky_relu: no dead units, so nothing can silence the blow-up.
    cfg = TrainConfig(
        optimizer="sgd",
        lr=10.0,
        batch_size=32,
        hidden_layers=1,
        hidden_units=16,
        activation="leaky_relu",
        max_epochs=3,
        seed=seed,
    )
    calls: list[int] = []
    with pytest.raises(DivergedError, match="epoch 1"):
        fit(cfg, data, lambda m: calls.append(m.epoch))
    assert calls == []


def test_fit_reaches_high_accuracy_on_digits(digits: TensorData) -> None:
    cfg = TrainConfig(
        optimizer="adam",
        lr=1e-3,
        batch_size=64,
        hidden_layers=1,
        hidden_units=64,
        max_epochs=15,
        seed=0,
    )
    stop_at: list[int] = []

    def on_epoch(m: EpochMetrics) -> bool:
        if m.values["val_accuracy"] >= 0.9:
            stop_at.append(m.epoch)
            return True
        return False

    result = fit(cfg, digits, on_epoch)
    assert stop_at, f"val_accuracy never reached 0.9: {result.curves['val_accuracy']}"
    assert result.curves["val_accuracy"][-1] >= 0.9
    assert result.curves["train_loss"][-1] < result.curves["train_loss"][0]
    _, test_acc = evaluate(result.model, digits.x_test, digits.y_test)
    assert test_acc >= 0.85


def test_fit_reports_train_metrics_in_eval_mode(moons: TensorData) -> None:
    """train_loss on the curve is the eval-mode loss, not the dropout-noisy batch mean."""
    result = fit(_small_cfg(dropout=0.5, max_epochs=2), moons)
    want = evaluate(result.model, moons.x_train, moons.y_train)
    assert result.curves["train_loss"][-1] == pytest.approx(want[0], rel=1e-6)
    assert result.curves["train_accuracy"][-1] == pytest.approx(want[1])


def test_prepare_model_runs_before_the_optimizer_and_frozen_layers_stay_put(
    moons: TensorData,
) -> None:
    """Transfer learning's hook: frozen blocks keep their weights, the head trains."""
    seen: dict[str, list[torch.Tensor]] = {}

    def freeze_blocks(model: TrainerModel) -> None:
        for p in model.blocks.parameters():
            p.requires_grad_(False)
        seen["before"] = [p.detach().clone() for p in model.blocks.parameters()]
        seen["head"] = [p.detach().clone() for p in model.head.parameters()]

    result = fit(_small_cfg(max_epochs=2), moons, prepare_model=freeze_blocks)
    after = [p.detach() for p in result.model.blocks.parameters()]
    assert len(after) == len(seen["before"]) > 0
    for b, a in zip(seen["before"], after, strict=True):
        assert torch.equal(b, a)
    assert any(
        not torch.equal(b, a.detach())
        for b, a in zip(seen["head"], result.model.head.parameters(), strict=True)
    )
