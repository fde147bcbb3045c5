"""Fused training of many trials of one structure (PLACEHOLDER for fused-trainer's module).

This reference implementation has the interface of the real fused trainer but trains the
members one after another with `fit`; the worker's pack code (`service/worker/pack.py`) is
built and tested against it. The real module (branch fused-trainer) replaces this file.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch

from trainer.config import TrainConfig
from trainer.data import TensorData
from trainer.loop import DivergedError, EpochMetrics, FitResult, ModelBuilder, PrepareModel, fit

# Fields that change tensor shapes or the op graph: configs that differ in any of them
# cannot share one batched model. Everything else is continuous and may differ per member.
STRUCTURE_FIELDS = (
    "family",
    "hidden_layers",
    "hidden_units",
    "hidden_units_shrink",
    "conv_blocks",
    "conv_channels",
    "kernel_size",
    "pooling",
    "activation",
    "batch_norm",
    "batch_size",
    "optimizer",
    "lr_schedule",
    "grad_clip",
    "augment",
    "init",
    "weight_decay_mode",
    "max_epochs",
    "monitor",
    "telemetry",
)

# A member's own failures; anything else (e.g. the worker's stop) ends the whole pack.
_MEMBER_FAILURES = (DivergedError, ValueError, RuntimeError, ArithmeticError)


def structure_key(config: TrainConfig) -> tuple[Hashable, ...]:
    """The values of `config` that decide tensor shapes and the op graph: configs with
    equal keys can be trained as one fused model."""
    return tuple(getattr(config, name) for name in STRUCTURE_FIELDS)


def fit_fused(
    configs: Sequence[TrainConfig],
    data: TensorData,
    on_epoch: Callable[[int, EpochMetrics], bool] | None = None,
    *,
    prepare_models: Sequence[PrepareModel | None] | None = None,
    model_builder: ModelBuilder | None = None,
) -> list[FitResult | BaseException]:
    """Train every config of `configs` (one structure key) on `data`; `on_epoch(i, m)` is
    member i's per-epoch callback (True stops that member). Returns, per member, its
    `FitResult` or the exception that ended it (a diverged member fails alone).

    Placeholder: the members train sequentially with `fit`. Raises ValueError when the
    configs' structure keys differ.
    """
    if len({structure_key(c) for c in configs}) > 1:
        raise ValueError("fit_fused: the configs' structure keys differ")
    results: list[FitResult | BaseException] = []
    for i, config in enumerate(configs):
        prepare = None if prepare_models is None else prepare_models[i]

        def member_epoch(m: EpochMetrics, i: int = i) -> bool:
            return False if on_epoch is None else bool(on_epoch(i, m))

        try:
            if model_builder is None:
                result = fit(config, data, member_epoch, prepare_model=prepare)
            else:
                result = fit(
                    config, data, member_epoch, prepare_model=prepare, model_builder=model_builder
                )
        except _MEMBER_FAILURES as e:
            if isinstance(e, torch.cuda.OutOfMemoryError):
                raise  # the whole pack is too large, not this member's fault
            results.append(e)
        else:
            results.append(result)
    return results


__all__ = ["STRUCTURE_FIELDS", "fit_fused", "structure_key"]
