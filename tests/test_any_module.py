"""Any `nn.Module` as a model: gradient telemetry per parameter group (module path), dead
units wherever a ReLU-family module runs, weights transferred by name and shape, saved models
rebuilt through a builder, and diagnosis on whatever telemetry exists."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainer.checkpoint import checkpoint_bytes, load_checkpoint, rebuild_model
from trainer.config import TrainConfig
from trainer.data import TensorData
from trainer.detectors import TrialRun
from trainer.diagnosis import diagnose
from trainer.families import UnknownFamily
from trainer.loop import fit
from trainer.model import build_model, weight_layers
from trainer.modules import (
    TransferMismatch,
    check_output,
    parameter_groups,
    relu_activations,
    transfer_matching,
)
from trainer.telemetry import GradientTelemetry


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SeqNet(nn.Module):
    """Embedding-free sequence model: 12 features read as 4 steps of 3 -> GRU -> attention
    -> residual feed-forward with a ReLU -> head. Several weight matrices per module (GRU,
    attention's in_proj), a module (attention) holding a Linear, a skip connection."""

    def __init__(self, n_classes: int, hidden: int = 8) -> None:
        super().__init__()
        self.gru = nn.GRU(3, hidden, batch_first=True)
        self.attn = nn.MultiheadAttention(hidden, 2, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.gru(x.reshape(x.shape[0], 4, 3))
        att, _ = self.attn(seq, seq, seq, need_weights=False)
        h = seq + att
        h = h + self.ff(h)
        out: torch.Tensor = self.head(h.mean(dim=1))
        return out


def seq_builder(config: TrainConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    assert input_shape == (12,)
    return SeqNet(n_classes, hidden=config.hidden_units)


@pytest.fixture(scope="module")
def blobs() -> TensorData:
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = (rng.standard_normal((120, 12)) + y[:, None]).astype(np.float32)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)

    return TensorData(t(x[:80]), t(y[:80]), t(x[80:]), t(y[80:]), t(x[:0]), t(y[:0]), 3)


def test_the_shipped_models_groups_are_their_weight_layers() -> None:
    cfg = TrainConfig(family="cnn", conv_blocks=2, hidden_layers=1, batch_norm="before")
    model = build_model(cfg, (1, 8, 8), 3)
    groups = parameter_groups(model)
    assert [g.tensors[0] for g in groups] == [layer.weight for layer in weight_layers(model)]
    assert all(len(g.tensors) == 1 for g in groups)  # batch norm's 1-D weights are no group
    assert groups[-1].name == "head"


def test_groups_of_a_sequence_model_are_its_modules_with_their_matrices() -> None:
    model = SeqNet(3)
    groups = {g.name: g.tensors for g in parameter_groups(model)}
    assert list(groups) == ["gru", "attn", "attn.out_proj", "ff.0", "head"]
    assert [t.shape for t in groups["gru"]] == [(24, 3), (24, 8)]  # weight_ih_l0, weight_hh_l0
    assert [p is model.attn.in_proj_weight for p in groups["attn"]] == [True]
    assert [path for path, _ in relu_activations(model)] == ["ff.1"]


def test_a_plugin_module_trains_with_telemetry_per_group(blobs: TensorData) -> None:
    start: dict[str, nn.Module] = {}
    cfg = TrainConfig(
        optimizer="sgd", lr=0.1, hidden_units=8, batch_size=10_000, max_epochs=2, seed=3
    )
    result = fit(
        cfg,
        blobs,
        prepare_model=lambda m: start.setdefault("m", copy.deepcopy(m)),
        model_builder=seq_builder,
    )
    assert isinstance(result.model, SeqNet)
    curves = result.curves
    for i in range(5):
        assert len(curves[f"grad_norm.{i}"]) == len(curves[f"weight_norm.{i}"]) == 2
    assert "grad_norm.5" not in curves and len(curves["dead_fraction.0"]) == 2
    # Epoch 1 is one full-batch step: group i's value is ‖(∂L/∂W_ik)_k‖₂ over its matrices.
    ref = start["m"]
    ref.train()
    groups = parameter_groups(ref)
    flat = [t for g in groups for t in g.tensors]
    grads = torch.autograd.grad(F.cross_entropy(ref(blobs.x_train), blobs.y_train), flat)
    k = 0
    for i, g in enumerate(groups):
        want = torch.cat([grads[k + j].flatten() for j in range(len(g.tensors))]).norm()
        k += len(g.tensors)
        assert curves[f"grad_norm.{i}"][0] == pytest.approx(float(want), rel=1e-4), g.name
    final = parameter_groups(result.model)
    gru_norm = torch.cat([t.detach().flatten() for t in final[0].tensors]).norm()
    assert curves["weight_norm.0"][-1] == pytest.approx(float(gru_norm), rel=1e-5)
    # Diagnosis reads whatever telemetry there is.
    findings = diagnose(TrialRun(curves=curves, n_classes=3, max_epochs=2))
    assert isinstance(findings, list)


def test_a_group_without_gradient_gets_no_value_for_that_epoch() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 2)
            self.spare = nn.Linear(4, 2)  # never called

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.used(x)
            return out

    model = Unused()
    telemetry = GradientTelemetry(model)
    model(torch.randn(5, 4)).sum().backward()
    telemetry.after_backward()
    values = telemetry.epoch_values()
    assert set(values) == {"grad_norm.0", "weight_norm.0", "weight_norm.1"}
    assert values["grad_norm.0"] == pytest.approx(float(model.used.weight.grad.norm()), rel=1e-6)


def test_groups_count_only_the_steps_that_gave_them_a_gradient() -> None:
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.sometimes = nn.Linear(4, 2), nn.Linear(4, 2)
            self.both = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.used(x)
            return out + self.sometimes(x) if self.both else out

    model = Branch()
    telemetry = GradientTelemetry(model)
    norms: dict[str, list[float]] = {"used": [], "sometimes": []}
    for both in (True, False, True):
        model.both = both
        model.zero_grad(set_to_none=True)
        model(torch.randn(5, 4)).square().sum().backward()
        telemetry.after_backward()
        for name in norms:
            grad = getattr(model, name).weight.grad
            if grad is not None:
                norms[name].append(float(grad.norm()))
    values = telemetry.epoch_values()
    assert values["grad_norm.0"] == pytest.approx(sum(norms["used"]) / 3, rel=1e-6)
    assert values["grad_norm.1"] == pytest.approx(sum(norms["sometimes"]) / 2, rel=1e-6)


def test_a_module_without_weight_matrices_has_only_its_dead_units() -> None:
    model = nn.Sequential(nn.LayerNorm(4), nn.ReLU())  # 1-D parameters only
    telemetry = GradientTelemetry(model)
    model(torch.randn(3, 4)).sum().backward()
    telemetry.after_backward()
    with telemetry.watching_units():
        model(torch.randn(3, 4))
    assert set(telemetry.epoch_values()) == {"dead_fraction.0"}


def test_a_shared_activation_at_two_widths_reports_no_dead_fraction() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.act = nn.Linear(4, 6), nn.Linear(6, 3), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.act(self.b(self.act(self.a(x))))
            return out

    model = Shared()
    telemetry = GradientTelemetry(model)
    with telemetry.watching_units():
        model(torch.randn(5, 4))
    assert not any(k.startswith("dead_fraction") for k in telemetry.epoch_values())


def test_transfer_by_name_and_shape_keeps_what_does_not_fit() -> None:
    torch.manual_seed(0)
    source = SeqNet(3)
    target = SeqNet(5)  # another number of classes: the head does not fit
    copied = transfer_matching(target, source.state_dict())
    assert "gru.weight_ih_l0" in copied and "head.weight" not in copied
    assert torch.equal(target.gru.weight_ih_l0, source.gru.weight_ih_l0)
    assert not torch.equal(target.head.weight[:3], source.head.weight)
    with pytest.raises(TransferMismatch, match="no stored parameter"):
        transfer_matching(nn.Linear(2, 2), source.state_dict())


def test_a_builder_returning_the_wrong_shape_is_refused_before_training(
    blobs: TensorData,
) -> None:
    with pytest.raises(ValueError, match=r"must return \(2, 3\)"):
        check_output(nn.Linear(12, 4), blobs.x_train[:2], 3)
    with pytest.raises(TypeError, match=r"must return a torch\.nn\.Module"):
        fit(TrainConfig(max_epochs=1), blobs, model_builder=lambda *a: "not a module")  # type: ignore[arg-type,return-value]


def test_a_saved_plugin_model_rebuilds_through_its_builder(blobs: TensorData) -> None:
    cfg = TrainConfig(hidden_units=8, max_epochs=1)
    result = fit(cfg, blobs, model_builder=seq_builder)
    blob = checkpoint_bytes(result.model, cfg, family="seqnet", input_shape=(12,), n_classes=3)
    ckpt = load_checkpoint(blob)
    assert ckpt.parameter_groups == ["gru", "attn", "attn.out_proj", "ff.0", "head"]
    with pytest.raises(UnknownFamily, match="unknown model family 'seqnet'"):
        rebuild_model(ckpt)  # not installed here: the plug-in is needed to rebuild
    model = rebuild_model(ckpt, seq_builder)
    assert not model.training
    with torch.no_grad():
        result.model.eval()
        assert torch.equal(model(blobs.x_val), result.model(blobs.x_val))
