"""Model side of the trainer checked against TECHNIQUES.md: initialization, activations,
batch norm, input noise and augmentation, the mlp and cnn families, gradient checking."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainer.config import TrainConfig
from trainer.data import TensorData
from trainer.gradcheck import check_gradients, check_module
from trainer.initialization import fans, init_layer, resolve_init
from trainer.layers import BatchNorm1d, GaussianNoise, RandomShiftRotate, affine_warp
from trainer.loop import fit
from trainer.model import (
    TrainerModel,
    build_activation,
    build_model,
    config_warnings,
    weight_layers,
)
from trainer.params import INITS


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a loaded machine they cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _weights(init: str, shape: tuple[int, ...] = (512, 512), **kw: float) -> torch.Tensor:
    layer = nn.Linear(shape[1], shape[0]) if len(shape) == 2 else nn.Conv2d(shape[1], shape[0], 3)
    torch.manual_seed(0)
    init_layer(layer, init, **kw)
    return layer.weight.detach()


# ---- initialization ------------------------------------------------------------------------


def test_he_normal_std_matches_sqrt_2_over_fan_in() -> None:
    w = _weights("he_normal")
    want = math.sqrt(2 / 512)
    assert abs(float(w.std()) - want) / want < 0.05
    assert abs(float(w.mean())) < 0.05 * want


def test_xavier_uniform_bound() -> None:
    w = _weights("xavier_uniform", (256, 512))
    bound = math.sqrt(6 / (512 + 256))
    assert float(w.abs().max()) <= bound
    assert float(w.abs().max()) > 0.999 * bound  # 131k draws reach the edge
    # uniform on [-b, b] has std b/√3
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_other_schemes_match_their_formulas() -> None:
    fan_in, fan_out = 512, 256
    w = _weights("he_uniform", (fan_out, fan_in))
    bound = math.sqrt(6 / fan_in)
    assert bound * 0.999 < float(w.abs().max()) <= bound
    w = _weights("xavier_normal", (fan_out, fan_in))
    assert float(w.std()) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.02)
    w = _weights("normal", std=0.37)
    assert float(w.std()) == pytest.approx(0.37, rel=0.02)
    assert torch.equal(_weights("zeros"), torch.zeros(512, 512))
    assert torch.equal(_weights("constant", constant=-0.25), torch.full((512, 512), -0.25))
    # Conv fans count the kernel: fan_in = in_channels·k·k
    conv = _weights("he_normal", (64, 32, 3, 3))
    assert fans(conv) == (32 * 9, 64 * 9)
    assert float(conv.std()) == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.05)


@pytest.mark.parametrize("init", INITS)
def test_biases_start_at_zero_except_default(init: str) -> None:
    model = build_model(TrainConfig(init=init, hidden_layers=2, hidden_units=64), (20,), 5)
    for layer in weight_layers(model):
        assert isinstance(layer.bias, torch.Tensor)
        bias = layer.bias.detach()
        if init == "default":  # PyTorch's U(-1/√fan_in, 1/√fan_in)
            assert float(bias.abs().max()) > 0
            assert float(bias.abs().max()) <= 1 / math.sqrt(layer.weight.shape[1])
        else:
            assert float(bias.abs().max()) == 0


def test_auto_picks_he_for_relu_family_and_xavier_for_sigmoid_tanh() -> None:
    for act in ("relu", "leaky_relu", "elu"):
        assert resolve_init(TrainConfig(activation=act)) == "he_normal"
    for act in ("sigmoid", "tanh"):
        assert resolve_init(TrainConfig(activation=act)) == "xavier_normal"
    assert resolve_init(TrainConfig(init="he_uniform", activation="tanh")) == "he_uniform"
    torch.manual_seed(0)
    relu = build_model(TrainConfig(hidden_layers=1, hidden_units=512), (512,), 10)
    torch.manual_seed(0)
    tanh = build_model(
        TrainConfig(hidden_layers=1, hidden_units=512, activation="tanh"), (512,), 10
    )
    assert float(weight_layers(relu)[0].weight.detach().std()) == pytest.approx(
        math.sqrt(2 / 512), rel=0.05
    )
    assert float(weight_layers(tanh)[0].weight.detach().std()) == pytest.approx(
        math.sqrt(1 / 512), rel=0.05
    )


def test_constant_init_keeps_hidden_units_identical_after_a_training_step() -> None:
    cfg = TrainConfig(init="constant", init_constant=0.05, hidden_layers=2, hidden_units=16)
    model = build_model(cfg, (6,), 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.manual_seed(1)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    before = [layer.weight.detach().clone() for layer in weight_layers(model)]
    # Step 1 only moves the head: with equal head rows, Σ_k W2[k]·(p_k - y_k) = 0 reaches
    # the hidden layers. From step 2 they get gradients, the same for every unit.
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        opt.step()
    for i, layer in enumerate(weight_layers(model)[:-1]):
        w = layer.weight.detach()
        assert not torch.equal(w, before[i]), "the step changed nothing"
        # every unit (row) of a hidden layer is the same vector: symmetry is never broken
        assert torch.allclose(w, w[:1].expand_as(w), atol=0, rtol=0), i
    assert any("symmetry" in w for w in config_warnings(cfg))


# ---- activations ---------------------------------------------------------------------------


def test_activation_parameters() -> None:
    z = torch.tensor([-3.0, -1.0, -0.2, 0.0, 0.4, 2.0], dtype=torch.float64)
    zn = z.numpy()
    got = build_activation("leaky_relu", slope=0.2)(z).numpy()
    np.testing.assert_allclose(got, np.where(zn < 0, 0.2 * zn, zn), rtol=1e-12)
    got = build_activation("elu", alpha=1.7)(z).numpy()
    np.testing.assert_allclose(got, np.where(zn < 0, 1.7 * (np.exp(zn) - 1), zn), rtol=1e-12)
    cfg = TrainConfig(activation="leaky_relu", leaky_relu_slope=0.3, hidden_layers=1)
    (act,) = [m for m in build_model(cfg, (4,), 2).modules() if isinstance(m, nn.LeakyReLU)]
    assert act.negative_slope == 0.3
    cfg = TrainConfig(activation="elu", elu_alpha=0.5, hidden_layers=1)
    (elu,) = [m for m in build_model(cfg, (4,), 2).modules() if isinstance(m, nn.ELU)]
    assert elu.alpha == 0.5


# ---- batch norm ----------------------------------------------------------------------------


def _block_types(model: TrainerModel) -> list[list[type[nn.Module]]]:
    return [
        [type(m) for m in block.children() if not isinstance(m, nn.Flatten | nn.Unflatten)]
        for block in model.blocks
    ]


def test_batch_norm_placement_and_bias() -> None:
    before = build_model(TrainConfig(batch_norm="before", dropout=0.1), (5,), 3)
    assert _block_types(before) == [[nn.Linear, BatchNorm1d, nn.ReLU, nn.Dropout]] * 2
    assert all(layer.bias is None for layer in weight_layers(before)[:-1])
    after = build_model(TrainConfig(batch_norm="after"), (5,), 3)
    assert _block_types(after) == [[nn.Linear, nn.ReLU, BatchNorm1d]] * 2
    assert all(isinstance(layer.bias, torch.Tensor) for layer in weight_layers(after))
    cnn = build_model(TrainConfig(family="cnn", batch_norm="before", hidden_layers=0), (1, 8, 8), 3)
    assert _block_types(cnn) == [[nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]] * 2
    assert all(layer.bias is None for layer in weight_layers(cnn)[:-1])


def test_batch_norm_uses_running_statistics_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = build_model(TrainConfig(batch_norm="before", hidden_layers=1, hidden_units=8), (4,), 2)
    (bn,) = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    lin = weight_layers(model)[0]
    model.train()
    for _ in range(30):  # running stats: moving averages (momentum 0.1) of batch statistics
        model(torch.randn(64, 4) * 3 + 1)
    x = torch.randn(16, 4)
    z = lin(x).detach()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    gamma, beta = bn.weight.detach(), bn.bias.detach()
    model.eval()
    got = bn(z).detach()
    want = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * gamma + beta
    torch.testing.assert_close(got, want)
    batch = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + bn.eps) * gamma + beta
    assert not torch.allclose(got, batch, atol=1e-2)  # not the batch's own statistics
    model.train()
    torch.testing.assert_close(bn(z).detach(), batch, rtol=1e-4, atol=1e-4)


def test_batch_norm_accepts_a_last_batch_of_one_row() -> None:
    cfg = TrainConfig(batch_norm="after", hidden_layers=1, hidden_units=8, max_epochs=2)
    x, y = torch.randn(33, 4), torch.arange(33) % 2
    # 17 training rows with batch_size 16: every epoch ends with a batch of one row
    data = TensorData(x[:17], y[:17], x[17:], y[17:], x[:0], y[:0], 2)
    result = fit(dataclasses.replace(cfg, batch_size=16), data)
    assert result.epochs_run == 2
    model = build_model(cfg, (4,), 2)
    (bn,) = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    model(torch.randn(64, 4))
    mean, var = bn.running_mean.clone(), bn.running_var.clone()  # type: ignore[union-attr]
    one = torch.randn(1, 4)
    train_out = model(one)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    model.eval()
    torch.testing.assert_close(train_out, model(one))


def test_config_warnings_dropout_before_batch_norm() -> None:
    assert config_warnings(TrainConfig()) == []
    warned = config_warnings(TrainConfig(batch_norm="after", dropout=0.3, hidden_layers=2))
    assert len(warned) == 1 and "variance shift" in warned[0]
    # one block: its dropout feeds only the head, no batch norm follows
    assert config_warnings(TrainConfig(batch_norm="before", dropout=0.3, hidden_layers=1)) == []
    cnn = TrainConfig(family="cnn", batch_norm="before", dropout=0.3, hidden_layers=0)
    assert any("variance shift" in w for w in config_warnings(cnn))
    assert any(
        "no effect" in w for w in config_warnings(TrainConfig(batch_norm="after", hidden_layers=0))
    )


# ---- input noise and augmentation ----------------------------------------------------------


def test_gaussian_input_noise_in_training_only() -> None:
    model = build_model(TrainConfig(input_noise=0.3, hidden_layers=0), (10,), 2)
    (noise,) = model.inputs
    assert isinstance(noise, GaussianNoise)
    x = torch.ones(20000, 10)
    torch.manual_seed(0)
    noisy = noise(x) - x
    assert float(noisy.std()) == pytest.approx(0.3, rel=0.02)
    assert abs(float(noisy.mean())) < 0.01
    model.eval()
    assert torch.equal(model.inputs(x), x)
    assert list(model.inputs.parameters()) == []


def test_shift_moves_pixels_by_whole_pixels() -> None:
    img = torch.zeros(1, 1, 8, 10)
    img[0, 0, 3, 4] = 1.0
    out = affine_warp(img, torch.tensor([[2.0, -1.0]]), torch.zeros(1))  # 2 right, 1 up
    want = torch.zeros_like(img)
    want[0, 0, 2, 6] = 1.0
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)


def test_rotation_turns_about_the_centre() -> None:
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 7] = 1.0  # 3 pixels right of the centre
    out = affine_warp(img, torch.zeros(1, 2), torch.tensor([math.pi / 2]))
    # +90° turns counter-clockwise as displayed: from 3 o'clock to 12 o'clock, 3 pixels up
    assert out[0, 0, 1, 4] == pytest.approx(1.0, abs=1e-5)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("shape", [(1, 12, 12), (12, 12)])
def test_augment_acts_in_training_only(shape: tuple[int, ...]) -> None:
    cfg = TrainConfig(augment="shift_rotate", hidden_layers=0)
    model = build_model(cfg, shape, 3, layout="image")
    (aug,) = model.inputs
    assert isinstance(aug, RandomShiftRotate) and aug.max_shift == 1 and aug.max_degrees == 15
    torch.manual_seed(0)
    x = torch.randn(64, *shape)
    out = model.inputs(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    shift_only = build_model(TrainConfig(augment="shift", hidden_layers=0), shape, 3)
    moved = shift_only.inputs(x).reshape(64, -1)
    # whole-pixel shifts only move values: every output pixel is an input pixel or 0, and
    # at most one row and one column (max shift 1 on a 12 px image) fall out of the image
    is_input = (moved[:, :, None] == x.reshape(64, 1, -1)).any(-1)
    assert bool((is_input | (moved == 0)).all())
    assert int(is_input.sum(1).min()) >= 11 * 11
    assert not torch.equal(moved, x.reshape(64, -1))
    model.eval()
    assert torch.equal(model.inputs(x), x)


def test_augment_refuses_tabular_inputs() -> None:
    with pytest.raises(ValueError, match="augment: 'shift' needs image inputs"):
        build_model(TrainConfig(augment="shift"), (30,), 2)
    with pytest.raises(ValueError, match="augment"):
        build_model(TrainConfig(augment="shift", family="cnn"), (2, 30), 2, layout="signal")


# ---- gradient checking ---------------------------------------------------------------------


class _WrongSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return g * x  # wrong: d(x²)/dx = 2x


def test_gradcheck_tells_right_from_wrong_gradients() -> None:
    x = torch.randn(5, 3)
    assert check_gradients(lambda t: t * t, [x]).relative_error < 1e-8
    wrong = check_gradients(_WrongSquare.apply, [x])
    assert wrong.relative_error == pytest.approx(1 / 3, rel=1e-6)  # |x-2x| / (|x|+|2x|)
    assert not wrong.ok()


def test_gradcheck_of_our_input_modules_and_blocks() -> None:
    x = torch.randn(3, 1, 6, 6)
    shift = torch.tensor([[1.0, 0.0], [-2.0, 1.0], [0.0, 0.0]])
    angle = torch.tensor([0.1, -0.2, 0.25])
    # the augmentation's warp (training path) with fixed draws; linear in x
    assert check_gradients(lambda t: affine_warp(t, shift, angle), [x]).ok()

    def noisy(t: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)  # the same noise on every call
        return GaussianNoise(0.5)(t)

    assert check_gradients(noisy, [x]).ok()
    assert check_module(GaussianNoise(0.5).eval(), x).ok()
    assert check_module(RandomShiftRotate(2, 10).eval(), x).ok()
    # whole (small) models in float64: BN before/after in training mode, tanh, elu, pooling
    x = torch.randn(4, 1, 4, 4)
    for cfg in (
        TrainConfig(batch_norm="before", activation="tanh", hidden_layers=2, hidden_units=3),
        TrainConfig(
            family="cnn",
            conv_blocks=1,
            conv_channels=2,
            pooling="avg",
            activation="elu",
            batch_norm="after",
            hidden_layers=1,
            hidden_units=3,
        ),
    ):
        torch.manual_seed(0)
        model = build_model(cfg, (1, 4, 4), 3)
        assert check_module(model, x).ok(), cfg


# ---- families and shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "layout", "conv"),
    [
        ((40,), "auto", nn.Conv1d),  # (n, length)
        ((3, 40), "signal", nn.Conv1d),  # (n, channels, length)
        ((12, 10), "auto", nn.Conv2d),  # (n, h, w)
        ((3, 12, 10), "auto", nn.Conv2d),  # (n, c, h, w)
    ],
)
def test_cnn_shapes_for_all_input_layouts(
    shape: tuple[int, ...], layout: str, conv: type[nn.Module]
) -> None:
    cfg = TrainConfig(
        family="cnn",
        conv_blocks=3,
        conv_channels=4,
        kernel_size=3,
        hidden_layers=1,
        hidden_units=16,
        batch_norm="before",
        dropout=0.1,
    )
    model = build_model(cfg, shape, 7, layout=layout)  # type: ignore[arg-type]
    layers = weight_layers(model)
    assert [type(m) for m in layers] == [conv] * 3 + [nn.Linear, nn.Linear]
    assert [m.out_channels for m in layers[:3]] == [4, 8, 16]  # type: ignore[union-attr]
    has_channels = layout == "signal" or len(shape) == 3
    assert layers[0].in_channels == (shape[0] if has_channels else 1)  # type: ignore[union-attr]
    spatial = shape[1:] if has_channels else shape
    for _ in range(3):  # 2x pooling per block while a side is >= 2
        spatial = tuple(s // 2 for s in spatial) if min(spatial) >= 2 else spatial
    assert layers[3].in_features == 16 * math.prod(spatial)  # type: ignore[union-attr]
    x = torch.randn(5, *shape)
    assert model(x).shape == (5, 7)
    model.eval()
    assert model(x[:1]).shape == (1, 7)


def test_cnn_options() -> None:
    base = dict(family="cnn", conv_blocks=4, conv_channels=200, hidden_layers=0)
    model = build_model(TrainConfig(**base, pooling="avg", kernel_size=5), (1, 8, 8), 10)  # type: ignore[arg-type]
    convs = weight_layers(model)[:-1]
    assert [c.out_channels for c in convs] == [200, 400, 512, 512]  # type: ignore[union-attr]
    assert all(c.kernel_size == (5, 5) for c in convs)
    pools = [m for m in model.modules() if isinstance(m, nn.AvgPool2d)]
    assert len(pools) == 3  # 8 -> 4 -> 2 -> 1, then no more pooling
    assert weight_layers(model)[-1].in_features == 512  # type: ignore[union-attr]
    flat = build_model(TrainConfig(**base, pooling="none"), (1, 8, 8), 10)  # type: ignore[arg-type]
    assert weight_layers(flat)[-1].in_features == 512 * 64  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="family cnn: cannot convolve"):
        build_model(TrainConfig(family="cnn"), (2, 3, 4, 5), 2)
    with pytest.raises(ValueError, match=r"model\.family"):
        build_model(TrainConfig(family="rnn"), (4,), 2)


def test_mlp_widths_shrink() -> None:
    cfg = TrainConfig(hidden_layers=4, hidden_units=256, hidden_units_shrink=0.5)
    model = build_model(cfg, (10,), 3)
    assert [m.out_features for m in weight_layers(model)] == [256, 128, 64, 32, 3]  # type: ignore[union-attr]
