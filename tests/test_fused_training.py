"""Fused training reproduces sequential `fit` runs (issue 14 §3-4).

For every optimizer, learning-rate schedule and regularizer of trainer/params.py and
TECHNIQUES.md, on `mlp` and `cnn`: K members with different continuous values trained by
`fit_fused` give the curves, epochs, best epoch and weights of K `fit` runs with the same
seeds.

Tolerance: each member's model is built, shuffled and masked (dropout, input noise,
augmentation) from the same generators as `fit`'s and its optimizer step is PyTorch's own
per-group kernel, so the only difference is the float32 reduction order inside batched
matmuls/grouped convolutions and the per-member loss mean (a relative rounding error of
~1e-7 per op). Over a few epochs of a few dozen steps these errors stay far below
rtol 1e-4 / atol 1e-5 on losses and weights; accuracies are counts over the split, so a
rounding difference could flip one borderline prediction: they are compared at one
example's worth. A genuine mistake (a member stepped with another member's lr, a shared
dropout mask, a mixed-up batch) moves values by 1e-2 or more.

Some configurations are chaotic: rounding noise grows by orders of magnitude per step, so no
two float32 computations in different order agree after an epoch (measured: batch norm
AFTER a ReLU on 3-channel convolutions with nearly dead channels, lr 0.01-0.02 — a 1e-7
perturbation of the initial weights changes epoch 2's train loss from 1.95 to 1.73 in
plain sequential `fit`; Adam at lr 1e-2 on batch norm amplifies it too). The cases below
avoid them: their fused and sequential curves agree to ~1e-7 relative.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch

from trainer.config import TrainConfig
from trainer.data import TensorData, load_dataset
from trainer.fused import fit_fused, structure_key
from trainer.loop import DivergedError, EpochMetrics, FitResult, fit
from trainer.model import TrainerModel, build_model
from trainer.params import LR_SCHEDULES, OPTIMIZERS
from trainer.state import Checkpointer, TrainingState, load_state, state_bytes

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: tiny ops on a shared 2-core machine spin otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tabular() -> TensorData:
    return TensorData.from_splits(load_dataset("moons", n_samples=200, seed=0), "cpu")


@pytest.fixture(scope="module")
def images() -> TensorData:
    splits = load_dataset("digits", n_samples=160, seed=0, shape="image")
    return TensorData.from_splits(splits, "cpu")


def _mlp(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "hidden_layers": 2,
        "hidden_units": 12,
        "batch_size": 32,
        "max_epochs": 3,
        "lr": 0.01,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _cnn(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "family": "cnn",
        "conv_blocks": 2,
        "conv_channels": 3,
        "hidden_layers": 1,
        "hidden_units": 8,
        "batch_size": 32,
        "max_epochs": 2,
        "lr": 0.01,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _members(base: TrainConfig, **values: list[object]) -> list[TrainConfig]:
    """K configs from `base`: member i takes values[name][i] and seed 10 + i."""
    k = len(next(iter(values.values()))) if values else 2
    return [
        dataclasses.replace(base, seed=10 + i, **{n: v[i] for n, v in values.items()})
        for i in range(k)
    ]


def _close(a: float, b: float, *, tol: float | None = None) -> bool:
    if tol is not None:
        return abs(a - b) <= tol
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def _assert_equivalent(
    fused: FitResult | BaseException, alone: FitResult, data: TensorData
) -> None:
    assert isinstance(fused, FitResult), fused
    assert fused.epochs_run == alone.epochs_run
    assert fused.best_epoch == alone.best_epoch
    assert fused.stopped_early == alone.stopped_early
    assert fused.stopped_by_callback == alone.stopped_by_callback
    assert fused.curves.keys() == alone.curves.keys()
    one_example = 1.0 / min(data.x_train.shape[0], data.x_val.shape[0]) + 1e-9
    for name, values in alone.curves.items():
        if name == "epoch_seconds":
            assert len(fused.curves[name]) == len(values)
            continue
        tol = one_example if "accuracy" in name or name.startswith("dead_fraction") else None
        got = fused.curves[name]
        assert len(got) == len(values), name
        assert all(_close(g, v, tol=tol) for g, v in zip(got, values, strict=True)), (
            name,
            got,
            values,
        )
    a, b = fused.model.state_dict(), alone.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=RTOL, atol=ATOL, msg=name)


def _check(configs: list[TrainConfig], data: TensorData) -> list[FitResult | BaseException]:
    assert len({structure_key(c) for c in configs}) == 1
    fused = fit_fused(configs, data)
    for config, result in zip(configs, fused, strict=True):
        _assert_equivalent(result, fit(config, data), data)
    return fused


# Every optimizer with its own hyperparameters varied between members; the regularizers
# ride along so each appears with several optimizers.
OPTIMIZER_CASES: dict[str, dict[str, list[object]]] = {
    "sgd": {"lr": [0.05, 0.1], "weight_decay": [0.0, 0.01]},
    "momentum": {"lr": [0.01, 0.03, 0.05], "momentum": [0.5, 0.9, 0.8], "l1": [1e-3, 0.0, 1e-2]},
    "nesterov": {"momentum": [0.9, 0.7], "weight_decay": [1e-3, 0.0]},
    "adam": {"lr": [1e-2, 3e-3], "beta1": [0.9, 0.8], "beta2": [0.999, 0.99], "eps": [1e-8, 1e-6]},
    "adamw": {"weight_decay": [0.01, 0.1, 0.0, 0.05]},
    "nadam": {"beta1": [0.9, 0.85], "weight_decay": [1e-3, 1e-2]},
    "rmsprop": {"rmsprop_alpha": [0.99, 0.9], "rmsprop_momentum": [0.0, 0.5], "lr": [1e-3, 3e-3]},
    "adagrad": {"lr": [0.05, 0.02], "eps": [1e-10, 1e-6]},
    "adadelta": {"lr": [1.0, 0.5], "adadelta_rho": [0.9, 0.95]},
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_mlp(tabular: TensorData, optimizer: str) -> None:
    base = _mlp(optimizer=optimizer)
    _check(_members(base, **OPTIMIZER_CASES[optimizer]), tabular)


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam", "rmsprop"])
def test_weight_decay_modes(tabular: TensorData, optimizer: str, mode: str) -> None:
    base = _mlp(optimizer=optimizer, weight_decay_mode=mode)
    _check(_members(base, weight_decay=[1e-2, 1e-1, 0.0], lr=[1e-2, 2e-2, 5e-3]), tabular)


SCHEDULE_CASES: dict[str, dict[str, list[object]]] = {
    "none": {"lr": [0.02, 0.05]},
    "exponential": {"lr_decay_k": [0.1, 0.5, 1.0]},
    "step": {"lr_step_every": [1, 2], "lr_step_gamma": [0.5, 0.1]},
    "inverse_time": {"lr_decay_k": [0.2, 2.0]},
    "reduce_on_plateau": {"lr_plateau_patience": [0, 1], "lr_plateau_factor": [0.5, 0.1]},
}


@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_every_schedule(tabular: TensorData, schedule: str) -> None:
    base = _mlp(optimizer="momentum", lr=0.05, lr_schedule=schedule, max_epochs=4)
    fused = _check(_members(base, **SCHEDULE_CASES[schedule]), tabular)
    if schedule not in ("none", "reduce_on_plateau"):  # the schedules did act
        lrs = [r.curves["lr"] for r in fused if isinstance(r, FitResult)]
        assert any(lr[-1] != lr[0] for lr in lrs)


REGULARIZER_CASES: dict[str, tuple[dict[str, object], dict[str, list[object]]]] = {
    "dropout": ({}, {"dropout": [0.2, 0.5, 0.1]}),
    "input_noise": ({}, {"input_noise": [0.1, 0.3]}),
    "l1": ({}, {"l1": [1e-3, 1e-2]}),
    "clip_value": ({"grad_clip": "value"}, {"grad_clip_threshold": [0.01, 0.1]}),
    "clip_norm": ({"grad_clip": "norm"}, {"grad_clip_threshold": [0.05, 1.0]}),
    "batch_norm_before": ({"batch_norm": "before"}, {"lr": [0.01, 0.05]}),
    "batch_norm_after+dropout": ({"batch_norm": "after"}, {"dropout": [0.1, 0.3]}),
    "init_normal_std": ({"init": "normal"}, {"init_std": [0.01, 0.3]}),
    "activations": ({"activation": "elu", "elu_alpha": 0.5}, {"lr": [0.01, 0.02]}),
}


@pytest.mark.parametrize("case", list(REGULARIZER_CASES))
def test_regularizers_mlp(tabular: TensorData, case: str) -> None:
    fixed, varied = REGULARIZER_CASES[case]
    _check(_members(_mlp(optimizer="adam", **fixed), **varied), tabular)


CNN_CASES: dict[str, tuple[dict[str, object], dict[str, list[object]]]] = {
    "sgd-dropout-maxpool": ({"optimizer": "sgd", "lr": 0.05}, {"dropout": [0.2, 0.4]}),
    "adam-bn-before-avgpool": (
        {"optimizer": "adam", "batch_norm": "before", "pooling": "avg"},
        {"lr": [1e-3, 2e-3, 5e-4]},
    ),
    "adamw-bn-after-shift-l1": (
        {
            "optimizer": "adamw",
            "batch_norm": "after",
            "augment": "shift",
            "l1": 1e-4,
            "conv_channels": 6,
            "lr": 1e-3,
        },
        {"weight_decay": [0.01, 0.1], "l1": [1e-4, 1e-3]},
    ),
    "rmsprop-noise-rotate-clip": (
        {"optimizer": "rmsprop", "augment": "shift_rotate", "grad_clip": "norm"},
        {"input_noise": [0.1, 0.2], "grad_clip_threshold": [0.5, 2.0]},
    ),
    "nesterov-step-nopool": (
        {"optimizer": "nesterov", "pooling": "none", "lr_schedule": "step", "lr_step_every": 1},
        {"momentum": [0.9, 0.5], "lr_step_gamma": [0.5, 0.9]},
    ),
    "adagrad-plateau-clip-value": (
        {"optimizer": "adagrad", "lr_schedule": "reduce_on_plateau", "grad_clip": "value"},
        {"lr_plateau_patience": [0, 2], "grad_clip_threshold": [0.05, 0.5]},
    ),
    "nadam-adadelta-like-inverse": (
        {"optimizer": "nadam", "lr_schedule": "inverse_time"},
        {"lr_decay_k": [0.5, 1.0]},
    ),
    "adadelta-exponential-dropout": (
        {"optimizer": "adadelta", "lr": 1.0, "lr_schedule": "exponential", "dropout": 0.1},
        {"adadelta_rho": [0.9, 0.8], "dropout": [0.1, 0.3]},
    ),
    "momentum-decoupled": (
        {"optimizer": "momentum", "weight_decay_mode": "decoupled"},
        {"weight_decay": [0.1, 0.01]},
    ),
}


@pytest.mark.parametrize("case", list(CNN_CASES))
def test_cnn(images: TensorData, case: str) -> None:
    fixed, varied = CNN_CASES[case]
    _check(_members(_cnn(**fixed), **varied), images)


def test_early_stopping_same_best_epoch(tabular: TensorData) -> None:
    base = _mlp(optimizer="adam", lr=0.05, max_epochs=8, early_stopping_patience=1)
    configs = _members(
        base, early_stopping_patience=[1, 2, 0], early_stopping_min_delta=[0.05, 0.01, 0.0]
    )
    fused = _check(configs, tabular)
    stopped = [r for r in fused if isinstance(r, FitResult) and r.stopped_early]
    assert stopped, "no member stopped early: the test proves nothing"
    assert any(r.best_epoch < r.epochs_run for r in stopped)


def test_on_epoch_stops_one_member(tabular: TensorData) -> None:
    configs = _members(_mlp(optimizer="adam", max_epochs=4), lr=[0.01, 0.02, 0.03])
    seen: list[tuple[int, int]] = []

    def on_epoch(i: int, m: EpochMetrics) -> bool:
        seen.append((i, m.epoch))
        return i == 1 and m.epoch == 2  # prune member 1 at epoch 2

    fused = fit_fused(configs, tabular, on_epoch)
    assert [r.epochs_run for r in fused if isinstance(r, FitResult)] == [4, 2, 4]
    assert sorted(seen) == sorted(
        [(0, e) for e in range(1, 5)] + [(1, 1), (1, 2)] + [(2, e) for e in range(1, 5)]
    )
    stopped = fused[1]
    assert isinstance(stopped, FitResult) and stopped.stopped_by_callback
    alone = fit(configs[1], tabular, lambda m: m.epoch == 2)
    for i, config in enumerate(configs):
        expected = alone if i == 1 else fit(config, tabular)
        _assert_equivalent(fused[i], expected, tabular)


def test_diverging_member_fails_alone(tabular: TensorData) -> None:
    configs = _members(_mlp(optimizer="sgd", max_epochs=3), lr=[0.05, 1e30, 0.1])
    with pytest.raises(DivergedError) as alone:
        fit(configs[1], tabular)
    fused = fit_fused(configs, tabular)
    assert isinstance(fused[1], DivergedError)
    assert str(fused[1]) == str(alone.value)
    for i in (0, 2):
        _assert_equivalent(fused[i], fit(configs[i], tabular), tabular)


def test_callback_error_ends_its_member_only(tabular: TensorData) -> None:
    configs = _members(_mlp(max_epochs=2), lr=[0.01, 0.02])

    def on_epoch(i: int, m: EpochMetrics) -> bool:
        if i == 0:
            raise RuntimeError("report failed")
        return False

    fused = fit_fused(configs, tabular, on_epoch)
    assert isinstance(fused[0], RuntimeError)
    _assert_equivalent(fused[1], fit(configs[1], tabular), tabular)


def test_different_max_epochs_and_single_member(tabular: TensorData) -> None:
    configs = _members(_mlp(max_epochs=3), max_epochs=[1, 3])
    _check(configs, tabular)
    _check(configs[:1], tabular)


def test_structure_key() -> None:
    a = _mlp(lr=0.1, dropout=0.2, seed=1, weight_decay=0.1, max_epochs=5)
    assert structure_key(a) == structure_key(dataclasses.replace(a, lr=0.3, dropout=0.5, seed=2))
    for change in (
        {"hidden_units": 13},
        {"batch_size": 16},
        {"optimizer": "sgd"},
        {"activation": "tanh"},
        {"dropout": 0.0},
        {"lr_schedule": "step"},
        {"grad_clip": "norm"},
        {"family": "cnn"},
    ):
        assert structure_key(dataclasses.replace(a, **change)) != structure_key(a), change
    with pytest.raises(ValueError, match="hidden_units"):
        fit_fused(
            [a, dataclasses.replace(a, hidden_units=5)],
            TensorData.from_splits(load_dataset("moons", n_samples=50, seed=0), "cpu"),
        )


def test_prepare_models_freeze_and_load(tabular: TensorData) -> None:
    """init_from's path: each member loads weights and freezes its first block."""
    donor = fit(_mlp(max_epochs=1, seed=99), tabular).model.state_dict()

    def prepare(model: TrainerModel) -> None:
        model.load_state_dict(donor)
        for p in model.blocks[0].parameters():
            p.requires_grad_(False)

    configs = _members(_mlp(optimizer="adam"), lr=[0.01, 0.03])
    fused = fit_fused(configs, tabular, prepare_models=[prepare, prepare])
    for config, result in zip(configs, fused, strict=True):
        _assert_equivalent(result, fit(config, tabular, prepare_model=prepare), tabular)
        assert isinstance(result, FitResult)
        assert "grad_norm.0" not in result.curves  # frozen: no gradient telemetry
        assert torch.equal(
            result.model.state_dict()["blocks.0.1.weight"], donor["blocks.0.1.weight"]
        )


def test_model_builder_trains_sequentially(tabular: TensorData) -> None:
    def builder(config: TrainConfig, shape: tuple[int, ...], n: int) -> TrainerModel:
        return build_model(config, shape, n)

    configs = _members(_mlp(max_epochs=2), lr=[0.01, 0.02])
    fused = fit_fused(configs, tabular, model_builder=builder)
    for config, result in zip(configs, fused, strict=True):
        alone = fit(config, tabular, model_builder=builder)
        assert isinstance(result, FitResult)
        assert result.curves["val_loss"] == alone.curves["val_loss"]


@pytest.mark.parametrize("schedule", ["exponential", "reduce_on_plateau"])
def test_member_checkpoint_resumes_with_fit(tabular: TensorData, schedule: str) -> None:
    """A fused member's saved state continues under sequential `fit` as the straight run."""
    base = _mlp(
        optimizer="adam",
        dropout=0.2,
        input_noise=0.1,
        lr_schedule=schedule,
        lr_plateau_patience=0,
        early_stopping_patience=10,
        max_epochs=4,
    )
    configs = _members(base, lr=[0.01, 0.03], dropout=[0.2, 0.3])
    saved: list[list[TrainingState]] = [[], []]
    checkpoints = [Checkpointer(saved[i].append, every_epochs=1) for i in range(2)]
    fused = fit_fused(configs, tabular, checkpoints=checkpoints)
    for i, config in enumerate(configs):
        assert [s.epoch for s in saved[i]] == [1, 2, 3, 4]
        state = load_state(state_bytes(saved[i][1]))
        resumed = fit(dataclasses.replace(config, seed=99), tabular, resume=state)
        straight = fit(config, tabular)
        _assert_equivalent(fused[i], straight, tabular)
        _assert_equivalent(resumed, straight, tabular)


def test_packs_really_fuse(
    tabular: TensorData, images: TensorData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in families train fused: the sequential fallback (`fit`) is never called."""

    def no_fit(*_args: object, **_kwargs: object) -> FitResult:
        raise AssertionError("fell back to sequential fit")

    monkeypatch.setattr("trainer.fused.fit", no_fit)
    for configs, data in (
        (_members(_mlp(dropout=0.2, batch_norm="before"), lr=[0.01, 0.02]), tabular),
        (_members(_cnn(augment="shift", input_noise=0.1), lr=[0.01, 0.02]), images),
    ):
        assert all(isinstance(r, FitResult) for r in fit_fused(configs, data))


def test_regression_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (MSE on standardized targets, one output) fuses as classification does."""
    data = TensorData.from_splits(load_dataset("friedman1", n_samples=160, seed=0), "cpu")
    base = _mlp(optimizer="adam", dropout=0.1, monitor="val_rmse", early_stopping_patience=2)
    configs = _members(base, lr=[0.01, 0.03], dropout=[0.1, 0.2])
    fused = _check(configs, data)
    assert all(isinstance(r, FitResult) and "val_r2" in r.curves for r in fused)
