"""Fused training: K configurations that share one op graph train as one batched model.

`fit_fused(configs, data)` returns what K calls of `fit(configs[i], data)` return, but each
mini-batch step runs forward and backward once for all members ("horizontal fusion", HFTA,
MLSys 2021): member i's layer weights are stacked along a leading K axis for the step and
dense layers become one batched matmul (`torch.baddbmm`), convolutions one grouped
convolution (members as groups), batch norm one call over K·C channels. Every member keeps
its own ordinary `TrainerModel` whose parameters are the leaf tensors the optimizer updates,
so saved weights, `init_from`, early stopping's best weights and evaluation are unchanged.

Why the results are the same as sequential `fit` runs:
- each member's model is built under `torch.manual_seed(seed)` exactly as `fit` builds it
  (same initial weights), and its shuffling generator is `Generator().manual_seed(seed)`;
- the random draws `fit` takes from torch's global generator during training (dropout
  masks, input noise, augmentation) come, per member, from a generator that continues the
  global generator's state right after that member's model was built, in the same order
  and shapes (on the CPU; on CUDA each member has its own CUDA generator seeded with its
  seed: independent streams, not `fit`'s);
- the backward objective is Σᵢ Lᵢ (each member's mean batch cost), so member i's gradient is
  ∂Lᵢ/∂θᵢ exactly; the members never share a reduction over parameters;
- one optimizer holds two parameter groups per member (weights, others) with the member's
  own lr, weight decay, betas, eps, momentum...: PyTorch's per-group update is elementwise,
  so it is the member's own step. Schedules (LambdaLR, ReduceLROnPlateau) act on the
  member's groups only; clipping, early stopping and telemetry are per member.
What differs is float32 reduction order inside the batched matmuls/convolutions and the
per-member loss means (~1e-7 relative per op), so curves agree to a tolerance, not bit for
bit (tests/test_fused_training.py).

A member leaves the pack when its `on_epoch` callback returns True, when early stopping
ends it, at its own `max_epochs`, or when it fails (non-finite loss: `DivergedError`; an
exception raised by its callback): the remaining members' later steps stack only the
members still training. An exception in the shared computation ends every member still
training (each gets it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from trainer.config import TrainConfig
from trainer.data import TensorData
from trainer.layers import BatchNorm1d, GaussianNoise, RandomShiftRotate
from trainer.loop import (
    DivergedError,
    EpochMetrics,
    FitResult,
    ModelBuilder,
    PrepareModel,
    _evaluate_epoch,
    curve_metrics,
    fit,
)
from trainer.model import TrainerModel, build_model, weight_layers
from trainer.optim import build_optimizer, clip_gradients
from trainer.schedules import EarlyStopping, EpochSchedule, metric_mode
from trainer.state import Checkpointer, TrainingState, capture_state
from trainer.telemetry import GradientTelemetry

# (member index, metrics) -> True to stop that member (e.g. it was pruned).
FusedEpochCallback = Callable[[int, EpochMetrics], bool | None]

# TrainConfig fields that may differ between the members of one pack: continuous values that
# enter the computation as numbers (per-group optimizer values, per-member masks and
# scales, per-member schedules and stopping rules), never as shapes or ops. Whether dropout
# and input noise are on at all is part of the key (p = 0 builds no Dropout module); L1 and
# early stopping may be on for some members only (λ = 0 adds exactly 0 to a gradient).
PER_MEMBER_FIELDS = frozenset(
    {
        "lr",
        "momentum",
        "dropout",
        "weight_decay",
        "l1",
        "beta1",
        "beta2",
        "eps",
        "rmsprop_alpha",
        "rmsprop_momentum",
        "adadelta_rho",
        "lr_decay_k",
        "lr_step_gamma",
        "lr_step_every",
        "lr_plateau_factor",
        "lr_plateau_patience",
        "grad_clip_threshold",
        "early_stopping_patience",
        "early_stopping_min_delta",
        "init_std",
        "init_constant",
        "input_noise",
        "max_epochs",
        "seed",
        "monitor",
    }
)


def structure_key(config: TrainConfig) -> tuple[Hashable, ...]:
    """Everything that changes tensor shapes or the op graph (family, layer counts and widths,
    activation and its shape parameters, batch norm, pooling, kernel size, batch size,
    optimizer type, weight-decay mode, schedule type, clipping mode, augmentation, init
    scheme, telemetry, and whether dropout and input noise are on):
    configs with equal keys can be fused by `fit_fused`.

    The key is a tuple of (field, value) pairs plus the on/off flags, so it is hashable,
    comparable and readable in logs.
    """
    return _key_items(config)


def _key_items(config: TrainConfig) -> tuple[tuple[str, Hashable], ...]:
    fields = tuple(
        (f.name, getattr(config, f.name))
        for f in dataclasses.fields(config)
        if f.name not in PER_MEMBER_FIELDS
    )
    flags = (
        ("dropout_on", config.dropout > 0),
        ("input_noise_on", config.input_noise > 0),
    )
    return fields + flags


class _PerMemberOptimizer(torch.optim.SGD):
    """A stand-in optimizer whose `param_groups` are one member's groups of the shared
    optimizer, so that `EpochSchedule` (LambdaLR, ReduceLROnPlateau) schedules that member
    alone. It is never stepped itself."""

    def __init__(self, groups: list[dict[str, object]]) -> None:
        super().__init__([torch.zeros(1, requires_grad=True)], lr=1.0)
        self.param_groups = groups
        # LRScheduler warns when the scheduler steps before the optimizer ever did.
        self._opt_called = True


class _Member:
    """One configuration's training state inside a pack."""

    def __init__(
        self,
        index: int,
        config: TrainConfig,
        model: TrainerModel,
        generator: torch.Generator,
        rng: torch.Generator,
        metrics: Sequence[str],
    ) -> None:
        self.index = index
        self.config = config
        self.model = model
        self.generator = generator  # shuffling, as fit's
        self.rng = rng  # dropout, input noise, augmentation: fit's torch global generator
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.telemetry = GradientTelemetry(model) if config.telemetry else None
        self.stopper: EarlyStopping | None = None
        if config.early_stopping_patience > 0:
            self.stopper = EarlyStopping(
                config.early_stopping_patience,
                config.early_stopping_min_delta,
                metric_mode(config.monitor),
            )
        self.result = FitResult(model=model, curves={m: [] for m in metrics})
        self.schedule: EpochSchedule | None = None
        self.groups: list[dict[str, object]] = []
        self.checkpoint: Checkpointer | None = None
        # An optimizer shaped as `fit` builds it (two groups), sharing the pack optimizer's
        # state: what a checkpoint's optimizer state dict is taken from.
        self.mirror: torch.optim.Optimizer | None = None
        self.shared_state: dict[Any, Any] = {}  # the pack optimizer's state, by parameter


def _batch_first(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K·C, *spatial) channel-major -> (K, B, C, *spatial) member-major."""
    b = x.shape[0]
    return x.reshape(b, k, x.shape[1] // k, *x.shape[2:]).transpose(0, 1)


def _channel_major(x: torch.Tensor) -> torch.Tensor:
    """(K, B, C, *spatial) member-major -> (B, K·C, *spatial) for grouped convolutions."""
    k, b = x.shape[0], x.shape[1]
    return x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])


class _FusedForward:
    """The forward pass of K models of one structure, as batched ops on stacked weights.

    Activations travel member-major (K, B, ...) through dense layers and channel-major
    (B, K·C, ...) through convolutions, batch norm and pooling (members as channel groups).
    """

    def __init__(self, template: TrainerModel) -> None:
        self.template = template
        self.names = {id(p): n for n, p in template.named_parameters()}
        self.buffer_names = {id(b): n for n, b in template.named_buffers()}

    def __call__(
        self,
        x: torch.Tensor,
        members: Sequence[_Member],
        weights: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """x (K, B, *input) -> logits (K, B, classes)."""
        channel_major = False
        for module in self.template.inputs:
            x = self._input(module, x, members)
        for block in self.template.blocks:
            for module in block.children() if isinstance(block, nn.Sequential) else [block]:
                x, channel_major = self._layer(module, x, channel_major, members, weights, buffers)
        if channel_major:
            x = _batch_first(x, len(members))
        x = x.flatten(2)
        return self._linear(self.template.head, x, weights)

    def _w(self, p: torch.Tensor | None, weights: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return None if p is None else weights[self.names[id(p)]]

    def _linear(
        self, layer: nn.Linear, x: torch.Tensor, weights: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        w = self._w(layer.weight, weights)
        b = self._w(layer.bias, weights)
        assert w is not None
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    def _input(
        self, module: nn.Module, x: torch.Tensor, members: Sequence[_Member]
    ) -> torch.Tensor:
        if isinstance(module, GaussianNoise):
            noise = [
                m.config.input_noise
                * torch.randn(x.shape[1:], generator=m.rng, dtype=x.dtype, device=x.device)
                for m in members
            ]
            return x + torch.stack(noise)
        if isinstance(module, RandomShiftRotate):
            return torch.stack([_with_rng(m.rng, module, x[i]) for i, m in enumerate(members)])
        raise TypeError(f"fused training: unsupported input transform {type(module).__name__}")

    def _layer(
        self,
        module: nn.Module,
        x: torch.Tensor,
        channel_major: bool,
        members: Sequence[_Member],
        weights: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, bool]:
        k = len(members)
        if isinstance(module, nn.Flatten):
            if channel_major:
                x, channel_major = _batch_first(x, k), False
            return x.flatten(2), False
        if isinstance(module, nn.Unflatten):
            if channel_major:
                x, channel_major = _batch_first(x, k), False
            return x.reshape(*x.shape[:2], *module.unflattened_size), False
        if isinstance(module, nn.Linear):
            if channel_major:
                x, channel_major = _batch_first(x, k), False
            return self._linear(module, x.flatten(2), weights), False
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            if not channel_major:
                x = _channel_major(x)
            w = self._w(module.weight, weights)
            b = self._w(module.bias, weights)
            assert w is not None
            conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
            out = conv(
                x,
                w.reshape(-1, *w.shape[2:]),
                None if b is None else b.reshape(-1),
                module.stride,
                module.padding,
                module.dilation,
                module.groups * k,
            )
            return out, True
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return self._batch_norm(module, x, channel_major, k, weights, buffers), channel_major
        if isinstance(module, nn.Dropout):
            return self._dropout(x, channel_major, members), channel_major
        if isinstance(
            module,
            nn.ReLU
            | nn.Tanh
            | nn.Sigmoid
            | nn.LeakyReLU
            | nn.ELU
            | nn.MaxPool1d
            | nn.MaxPool2d
            | nn.AvgPool1d
            | nn.AvgPool2d,
        ):
            # Elementwise, or per channel: the same for every member (their shape parameters
            # are part of the structure key). Pools see (B, K·C, *spatial).
            if not channel_major and isinstance(
                module, nn.MaxPool1d | nn.MaxPool2d | nn.AvgPool1d | nn.AvgPool2d
            ):
                x, channel_major = _channel_major(x), True
            return module(x), channel_major
        raise TypeError(f"fused training: unsupported layer {type(module).__name__}")

    def _batch_norm(
        self,
        module: nn.modules.batchnorm._BatchNorm,
        x: torch.Tensor,
        channel_major: bool,
        k: int,
        weights: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Training-mode batch norm of K members at once: K·C channels, each member's running
        statistics updated in its own slice (written back to its model after the step)."""
        dense = not channel_major
        if dense:
            x = _channel_major(x)  # (K, B, F) -> (B, K·F)
        w = self._w(module.weight, weights)
        b = self._w(module.bias, weights)
        mean = buffers[self.buffer_names[id(module.running_mean)]]
        var = buffers[self.buffer_names[id(module.running_var)]]
        one_row = isinstance(module, BatchNorm1d) and x.shape[0] == 1 and x.ndim == 2
        momentum = module.momentum if module.momentum is not None else 0.0
        out = F.batch_norm(
            x,
            mean.view(-1),
            var.view(-1),
            None if w is None else w.reshape(-1),
            None if b is None else b.reshape(-1),
            not one_row,  # one row: normalized with the running statistics, as BatchNorm1d
            0.0 if one_row else momentum,
            module.eps,
        )
        if not one_row:
            tracked = buffers.get(self.buffer_names.get(id(module.num_batches_tracked), ""))
            if tracked is not None:
                tracked.add_(1)
        return _batch_first(out, k) if dense else out

    def _dropout(
        self, x: torch.Tensor, channel_major: bool, members: Sequence[_Member]
    ) -> torch.Tensor:
        """Inverted dropout with each member's p and generator: mask ~ Bernoulli(1-p)/(1-p)
        drawn in the member's own shape, as `F.dropout` draws it on the CPU."""
        k = len(members)
        shape = _batch_first(x, k).shape[1:] if channel_major else x.shape[1:]
        masks = []
        for m in members:
            p = m.config.dropout
            mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(
                1 - p, generator=m.rng
            )
            masks.append(mask.div_(1 - p))
        if channel_major:
            return x * torch.stack(masks, dim=1).reshape(x.shape)
        return x * torch.stack(masks)


def _with_rng(rng: torch.Generator, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x) drawing from `rng` as if it were torch's global generator (CPU)."""
    if rng.device.type != "cpu":
        return module(x)  # type: ignore[no-any-return]
    saved = torch.get_rng_state()
    torch.set_rng_state(rng.get_state())
    try:
        out = module(x)
        rng.set_state(torch.get_rng_state())
    finally:
        torch.set_rng_state(saved)
    return out  # type: ignore[no-any-return]


def _build_member(
    index: int,
    config: TrainConfig,
    data: TensorData,
    prepare_model: PrepareModel | None,
) -> _Member:
    """The member's model, built exactly as `fit` builds it (seeded init), and its
    generators."""
    metrics = curve_metrics(data.task)
    if config.monitor not in metrics:
        raise ValueError(
            f"monitor must be one of {list(metrics)} for {data.task}, got {config.monitor!r}"
        )
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    input_shape = tuple(data.x_train.shape[1:])
    model = build_model(config, input_shape, data.n_classes, layout=data.layout)
    model = model.to(data.x_train.device)
    if prepare_model is not None:
        prepare_model(model)
    device = data.x_train.device
    if device.type == "cpu":
        rng = torch.Generator()
        rng.set_state(torch.get_rng_state())  # continues fit's global generator
    else:
        rng = torch.Generator(device=device).manual_seed(config.seed)
    return _Member(index, config, model, generator, rng, metrics)


def _check_pack(configs: Sequence[TrainConfig]) -> None:
    keys = [dict(_key_items(c)) for c in configs]
    differ = sorted({n for key in keys[1:] for n, v in key.items() if keys[0].get(n) != v})
    if differ:
        raise ValueError(f"configs of one pack must share a structure_key; they differ in {differ}")


def _sequential(
    configs: Sequence[TrainConfig],
    data: TensorData,
    on_epoch: FusedEpochCallback | None,
    prepare_models: Sequence[PrepareModel | None],
    model_builder: ModelBuilder | None,
) -> list[FitResult | BaseException]:
    results: list[FitResult | BaseException] = []
    for i, config in enumerate(configs):

        def callback(metrics: EpochMetrics, i: int = i) -> bool | None:
            return None if on_epoch is None else on_epoch(i, metrics)

        try:
            results.append(
                fit(
                    config,
                    data,
                    callback,
                    prepare_model=prepare_models[i],
                    model_builder=model_builder,
                )
            )
        except Exception as e:  # one member's failure is its own
            results.append(e)
    return results


def fit_fused(
    configs: Sequence[TrainConfig],
    data: TensorData,
    on_epoch: FusedEpochCallback | None = None,
    *,
    prepare_models: Sequence[PrepareModel | None] | None = None,
    model_builder: ModelBuilder | None = None,
    checkpoints: Sequence[Checkpointer | None] | None = None,
) -> list[FitResult | BaseException]:
    """Train K members as one batched computation; element i is member i's FitResult (as
    `fit(configs[i], data, ...)` would return) or the exception that ended it alone (e.g.
    DivergedError for a member whose loss became non-finite — the others go on).

    `on_epoch(i, metrics)` is called after each of member i's epochs, in member order
    within an epoch; True stops member i (`stopped_by_callback`), as `fit`'s callback.
    `prepare_models[i]` is member i's `prepare_model` (load weights, freeze layers); the
    members must then still have the same trainable parameters (else they train one after
    the other). `model_builder` (plug-in families) trains the members sequentially with
    `fit`. `epoch_seconds` of a member is the pack's epoch wall time divided by the members
    trained in that epoch (its share of the device).

    `checkpoints[i]` saves member i's `TrainingState` when due, as `fit(checkpoint=...)`
    does; `fit(configs[i], data, resume=state)` continues it like the sequential run (on the
    CPU the state's torch generator is the member's own dropout/noise generator). Fused
    training itself does not resume: a resumed member trains alone with `fit`.

    Raises ValueError when the configs do not share one `structure_key` or `configs` is empty.
    """
    if not configs:
        raise ValueError("fit_fused needs at least one config")
    _check_pack(configs)
    prepares: Sequence[PrepareModel | None] = (
        prepare_models if prepare_models is not None else [None] * len(configs)
    )
    if len(prepares) != len(configs):
        raise ValueError(f"{len(prepares)} prepare_models for {len(configs)} configs")
    if model_builder is not None:
        return _sequential(configs, data, on_epoch, prepares, model_builder)

    results: list[FitResult | BaseException | None] = [None] * len(configs)
    members: list[_Member] = []
    for i, config in enumerate(configs):
        try:
            members.append(_build_member(i, config, data, prepares[i]))
        except Exception as e:
            results[i] = e
    if (
        members
        and len(
            {tuple(n for n, p in m.model.named_parameters() if p.requires_grad) for m in members}
        )
        > 1
    ):
        return _sequential(configs, data, on_epoch, prepares, None)
    if members and not _supported(members[0].model):
        return _sequential(configs, data, on_epoch, prepares, None)
    if members:
        try:
            if checkpoints is not None:
                for m in members:
                    m.checkpoint = checkpoints[m.index]
            _train(members, data, on_epoch, results)
        except Exception as e:  # setting the pack up failed: every member that has no result
            results = [e if r is None else r for r in results]
    return [r if r is not None else RuntimeError("fused training lost a member") for r in results]


_SUPPORTED = (
    nn.Sequential,
    nn.ModuleList,
    nn.Flatten,
    nn.Unflatten,
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Dropout,
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    GaussianNoise,
    RandomShiftRotate,
    TrainerModel,
)


def _supported(model: TrainerModel) -> bool:
    """Whether the fused forward knows every module of `model` (else: sequential `fit`)."""
    return all(type(m) in _SUPPORTED or isinstance(m, BatchNorm1d) for m in model.modules())


def _merge_equal_groups(optimizer: torch.optim.Optimizer) -> None:
    """Fold groups whose options are all equal (weights and others when there is no weight
    decay) into one: the update is per element either way, and each group costs a kernel
    launch and Python bookkeeping per step. The optimizer has no state yet."""
    merged: list[dict[str, object]] = []
    for group in optimizer.param_groups:
        options = {k: v for k, v in group.items() if k != "params"}
        for kept in merged:
            if {k: v for k, v in kept.items() if k != "params"} == options:
                kept["params"] = [*kept["params"], *group["params"]]  # type: ignore[misc]
                break
        else:
            merged.append(group)
    optimizer.param_groups = merged


def _shared_optimizer(members: Sequence[_Member]) -> torch.optim.Optimizer:
    """One optimizer with each member's two groups (weights, others) and options, built by
    `build_optimizer` per member and merged; each member gets a stand-in optimizer over its
    own groups for its schedule."""
    shared: torch.optim.Optimizer | None = None
    hooks: list[Any] = []
    for m in members:
        own = build_optimizer(m.config, m.model)
        hooks.extend(own._optimizer_step_pre_hooks.values())
        if m.checkpoint is None:  # a checkpoint's schedule state has fit's two groups
            _merge_equal_groups(own)
        if shared is None:
            shared = own
            m.groups = list(own.param_groups)
        else:
            m.groups = []
            for group in own.param_groups:
                shared.add_param_group(group)
                m.groups.append(shared.param_groups[-1])
        m.schedule = EpochSchedule(m.config, _PerMemberOptimizer(m.groups))
        if m.checkpoint is not None:
            m.mirror = build_optimizer(m.config, m.model)
    assert shared is not None
    if hooks and not shared._optimizer_step_pre_hooks:
        # The decoupled-decay hook reads each group's own λ (0: untouched), so one serves all.
        shared.register_step_pre_hook(hooks[0])
    for m in members:
        m.shared_state = shared.state
        if m.checkpoint is not None:
            m.checkpoint.start(0)
    return shared


def _train(
    members: list[_Member],
    data: TensorData,
    on_epoch: FusedEpochCallback | None,
    results: list[FitResult | BaseException | None],
) -> None:
    template = members[0].model
    forward = _FusedForward(template)
    names = [n for n, p in template.named_parameters()]
    buffer_names = [n for n, _ in template.named_buffers()]
    weight_names = [forward.names[id(layer.weight)] for layer in weight_layers(template)]
    trained_weights = [
        n
        for n, layer in zip(weight_names, weight_layers(template), strict=True)
        if isinstance(layer.weight, torch.Tensor) and layer.weight.requires_grad
    ]
    l1_names = [n for n, p in template.named_parameters() if p.requires_grad and p.ndim >= 2]
    optimizer = _shared_optimizer(members)
    device = data.x_train.device
    n = data.x_train.shape[0]
    config0 = members[0].config
    batch_size = config0.batch_size
    use_l1 = any(m.config.l1 > 0 for m in members)

    active = []
    for m in members:
        if m.config.max_epochs < 1:  # fit trains no epoch: the initial model
            results[m.index] = m.result
        else:
            active.append(m)
    epoch = 0
    while active:
        epoch += 1
        started = time.perf_counter()
        lrs = [float(m.groups[0]["lr"]) for m in active]  # type: ignore[arg-type]
        try:
            batch_losses, grad_norms = _train_epoch(
                active,
                data,
                forward,
                optimizer,
                names,
                buffer_names,
                trained_weights,
                l1_names if use_l1 else [],
                n,
                batch_size,
                device,
            )
        except Exception as e:  # the shared computation failed: every member still training
            for m in active:
                results[m.index] = e
            return
        share = (time.perf_counter() - started) / len(active)
        still: list[_Member] = []
        for slot, (m, lr) in enumerate(zip(active, lrs, strict=True)):
            eval_started = time.perf_counter()
            try:
                done = _finish_epoch(
                    m,
                    epoch,
                    float(batch_losses[slot]),
                    lr,
                    data,
                    on_epoch,
                    grad_norms[slot],
                    eval_started,
                    share,
                )
            except Exception as e:
                _own_storage(m)
                results[m.index] = e
                continue
            if done:
                _own_storage(m)
                _finalize(m)
                results[m.index] = m.result
            else:
                still.append(m)
        active = still


def _train_epoch(
    active: list[_Member],
    data: TensorData,
    forward: _FusedForward,
    optimizer: torch.optim.Optimizer,
    names: list[str],
    buffer_names: list[str],
    trained_weights: list[str],
    l1_names: list[str],
    n: int,
    batch_size: int,
    device: torch.device,
) -> tuple[list[float], torch.Tensor]:
    """One epoch of every active member; returns each one's mean batch cost and its mean
    per-layer gradient norms (K, trained weight layers)."""
    k = len(active)
    for m in active:
        m.model.train()
    perms = torch.stack(
        [torch.randperm(n, generator=m.generator, device="cpu") for m in active]
    ).to(device)
    weights, buffers = _stack_members(active, names, buffer_names)
    member_params = {
        name: [dict(m.model.named_parameters())[name] for m in active]
        for name, w in weights.items()
        if w.requires_grad
    }
    l1 = torch.tensor([m.config.l1 for m in active], device=device) if l1_names else None
    clip_mode = active[0].config.grad_clip
    regression = data.task == "regression"
    norms_sum = torch.zeros(k, len(trained_weights), device=device)
    losses = torch.zeros(k, device=device)
    n_batches = 0
    for start in range(0, n, batch_size):
        idx = perms[:, start : start + batch_size]  # (K, B)
        x = data.x_train[idx]
        y = data.y_train[idx]
        logits = forward(x, active, weights, buffers)
        b = logits.shape[1]
        if regression:  # per member: mean squared error of the one output
            loss = (logits[..., 0] - y).square().mean(dim=1)
        else:  # per member: mean cross-entropy
            loss = (
                F.cross_entropy(logits.reshape(k * b, -1), y.reshape(k * b), reduction="none")
                .view(k, b)
                .mean(dim=1)
            )
        if l1 is not None:
            penalty = torch.stack(
                [weights[name].abs().flatten(1).sum(dim=1) for name in l1_names]
            ).sum(dim=0)
            loss = loss + l1 * penalty  # cost + λ·Σ|W| per member
        optimizer.zero_grad(set_to_none=True)
        for w in weights.values():
            w.grad = None
        loss.sum().backward()  # type: ignore[no-untyped-call]
        for name, ps in member_params.items():
            grad = weights[name].grad
            if grad is not None:
                for i, p in enumerate(ps):
                    p.grad = grad[i]  # a view: the member's gradient, no copy
        if trained_weights:
            grads = [weights[t].grad for t in trained_weights]
            if all(g is not None for g in grads):
                norms_sum += torch.stack(
                    [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads if g is not None],
                    dim=1,
                )
        if clip_mode != "none":
            for m in active:
                clip_gradients(m.params, clip_mode, m.config.grad_clip_threshold)
        optimizer.step()
        losses += loss.detach()
        n_batches += 1
    values = (losses / max(n_batches, 1)).tolist()
    return [float(v) for v in values], norms_sum / max(n_batches, 1)


def _stack_members(
    active: Sequence[_Member], names: list[str], buffer_names: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stack the active members' parameters and buffers along a leading K axis, then point
    each member's tensors (`.data`) at its slice: the optimizer's in-place updates of a
    member's parameters, and batch norm's of its running statistics, land in the stacks
    the fused forward reads, and the member's model always holds its current values.
    Returns (leaf parameter stacks, buffer stacks) by name."""
    params = [dict(m.model.named_parameters()) for m in active]
    bufs = [dict(m.model.named_buffers()) for m in active]
    weights: dict[str, torch.Tensor] = {}
    for name in names:
        members = [p[name] for p in params]
        stacked = torch.stack([p.detach() for p in members])
        for i, p in enumerate(members):
            p.data = stacked[i]
        weights[name] = stacked.requires_grad_(members[0].requires_grad)
    buffers: dict[str, torch.Tensor] = {}
    for name in buffer_names:
        tensors = [b[name] for b in bufs]
        stacked = torch.stack(tensors)
        for i, b in enumerate(tensors):
            b.data = stacked[i]
        buffers[name] = stacked
    return weights, buffers


def _own_storage(m: _Member) -> None:
    """Give a member that leaves the pack tensors of its own (not slices of the stacks)."""
    for t in [*m.model.parameters(), *m.model.buffers()]:
        t.data = t.data.clone()


def _finish_epoch(
    m: _Member,
    epoch: int,
    batch_loss: float,
    lr: float,
    data: TensorData,
    on_epoch: FusedEpochCallback | None,
    grad_norms: torch.Tensor,
    started: float,
    share: float,
) -> bool:
    """Evaluate, record, report and schedule member `m`'s epoch as `fit` does; True when the
    member is done (stopped, early-stopped, at max_epochs). Raises DivergedError."""
    config, model, result = m.config, m.model, m.result
    _check_finite(epoch, train_loss=batch_loss)
    telemetry = m.telemetry
    values = _evaluate_epoch(model, data, telemetry)
    _check_finite(epoch, train_loss=values["train_loss"], val_loss=values["val_loss"])
    values["lr"] = lr
    if telemetry is not None:
        telemetry.set_grad_norms(grad_norms)
        values.update(telemetry.epoch_values())
    values["epoch_seconds"] = share + time.perf_counter() - started
    for name, value in values.items():
        result.curves.setdefault(name, []).append(value)
    result.epochs_run = result.best_epoch = epoch
    metric = values[config.monitor]
    no_progress = m.stopper is not None and m.stopper.update(epoch, metric, model)
    if on_epoch is not None and on_epoch(m.index, EpochMetrics(epoch=epoch, values=values)):
        result.stopped_by_callback = True
        return True
    if no_progress:
        result.stopped_early = True
        return True
    assert m.schedule is not None
    m.schedule.step(metric)
    if m.checkpoint is not None and m.checkpoint.due(epoch):
        m.checkpoint.save(_member_state(m, epoch))
    return epoch >= config.max_epochs


def _member_state(m: _Member, epoch: int) -> TrainingState:
    """Member `m`'s state after `epoch` in the form `fit` saves and resumes."""
    assert m.mirror is not None and m.schedule is not None
    own = [p for group in m.mirror.param_groups for p in group["params"]]
    m.mirror.state = defaultdict(dict, {p: m.shared_state[p] for p in own if p in m.shared_state})
    lr = m.groups[0]["lr"]
    for group in m.mirror.param_groups:
        group["lr"] = lr  # the schedules moved the pack's groups
        if "initial_lr" in m.groups[0]:
            group["initial_lr"] = m.groups[0]["initial_lr"]
    state = capture_state(
        epoch,
        dataclasses.asdict(m.config),
        model=m.model,
        optimizer=m.mirror,
        schedule=m.schedule,
        stopper=m.stopper,
        curves=m.result.curves,
        generator=m.generator,
    )
    if m.rng.device.type == "cpu":
        state.rng["torch"] = m.rng.get_state()  # fit draws dropout/noise from the global one
    return state


def _finalize(m: _Member) -> None:
    if m.stopper is not None and m.stopper.best_epoch:
        m.stopper.restore(m.model)
        m.result.best_epoch = m.stopper.best_epoch


def _check_finite(epoch: int, **losses: float) -> None:
    for name, value in losses.items():
        if not math.isfinite(value):
            raise DivergedError(f"diverged at epoch {epoch}: {name}={value}")
