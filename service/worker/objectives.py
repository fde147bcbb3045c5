"""A trial's objective values: what the worker tells Optuna when training ends.

A single-objective study tells one value, the objective's metric at the epoch whose weights
the trial keeps. A multi-objective study tells one value per `objectives` entry: per-epoch
metrics the same way, and the metrics measured once on the trained model:

- `n_params`: its trainable parameters (those with `requires_grad`; `init_from` with
  `freeze` leaves the reused blocks out).
- `inference_ms`: the median wall time, in milliseconds, of a forward pass of one batch of
  the trial's `batch_size` validation rows on the trial's device, under inference mode, after
  warm-up passes (CUDA: synchronized before and after each pass, so the time is the
  kernels', not their launch's).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from service.studies.spec import StudySpec
from trainer import FitResult, TensorData, TrainConfig

WARMUP_PASSES = 3
TIMED_PASSES = 10


def reports_to_optuna(spec: StudySpec) -> bool:
    """Whether each epoch's objective value is reported to Optuna (for its pruner): not in a
    multi-objective study, since Optuna's `Trial.report` takes one objective only."""
    return spec.objectives is None


def n_params(model: nn.Module) -> int:
    """Trainable parameters of `model` (elements of the tensors with `requires_grad`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _synchronize(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def inference_ms(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int,
    *,
    warmup: int = WARMUP_PASSES,
    passes: int = TIMED_PASSES,
) -> float:
    """Median milliseconds of `passes` forward passes of a batch of `batch_size` rows of `x`
    (rows repeated when `x` holds fewer), on `x`'s device, after `warmup` passes. The model's
    training mode is restored after."""
    if x.shape[0] == 0:
        raise ValueError("inference_ms needs at least one validation row")
    rows = torch.arange(batch_size, device=x.device) % x.shape[0]
    batch = x[rows]
    sync = _synchronize(x.device)
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.inference_mode():
            for i in range(warmup + passes):
                sync()
                start = time.perf_counter()
                model(batch)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return statistics.median(times)


def trial_values(
    spec: StudySpec, result: FitResult, config: TrainConfig, data: TensorData
) -> float | list[float]:
    """What the trial tells Optuna: the objective's value, or one value per objective."""
    if spec.objectives is None:
        return result.value(spec.objective.metric)
    values = []
    for objective in spec.objectives:
        if objective.metric == "n_params":
            values.append(float(n_params(result.model)))
        elif objective.metric == "inference_ms":
            values.append(inference_ms(result.model, data.x_val, config.batch_size))
        else:
            values.append(result.value(objective.metric))
    return values
