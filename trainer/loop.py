"""The training loop: fit(config, data, on_epoch) -> curves.

Per epoch, in order: shuffle -> [forward -> cost -> backward -> clip -> step] per mini-batch
-> evaluate train and validation splits under inference mode -> report to the callback ->
next epoch's learning rate -> early stopping. Curves hold the task's metrics
(`CURVE_METRICS` for classification, `REGRESSION_CURVE_METRICS` for regression) plus the
gradient telemetry of trainer.telemetry (per-layer names such as `grad_norm.0`).

Regression trains on standardized targets with a linear one-unit output and MSE; its losses
are in standardized units (predicting the training mean scores about 1, the target's
variance), its RMSE and MAE in the target's original units.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from trainer.config import TrainConfig
from trainer.data import Task, TensorData
from trainer.model import TrainerModel, build_model
from trainer.optim import build_optimizer, clip_gradients, l1_penalty, weight_params
from trainer.schedules import EarlyStopping, EpochSchedule, metric_mode
from trainer.state import Checkpointer, TrainingState, capture_state, restore_state, resume_problem
from trainer.telemetry import GradientTelemetry

CURVE_METRICS = (
    "train_loss",
    "val_loss",
    "train_accuracy",
    "val_accuracy",
    "lr",
    "epoch_seconds",
)

REGRESSION_CURVE_METRICS = (
    "train_loss",
    "val_loss",
    "val_rmse",
    "val_mae",
    "val_r2",
    "lr",
    "epoch_seconds",
)


def curve_metrics(task: Task) -> tuple[str, ...]:
    """The per-epoch curve metrics (besides telemetry) of a task."""
    return REGRESSION_CURVE_METRICS if task == "regression" else CURVE_METRICS


EVAL_BATCH = 4096  # rows per forward pass when evaluating; bounds memory on large splits


class DivergedError(RuntimeError):
    """Training produced a non-finite loss: `diverged at epoch 3: train_loss=nan`."""


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    values: dict[str, float]


@dataclass
class FitResult:
    model: TrainerModel
    curves: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    stopped_by_callback: bool = False
    # The epoch whose weights `model` holds: the best one under early stopping, else the last.
    best_epoch: int = 0
    stopped_early: bool = False
    resumed_from: int = 0  # the epoch of the state it resumed from; 0: trained from epoch 1

    def value(self, metric: str) -> float:
        """`metric` at `best_epoch`: the value that describes the returned model."""
        return self.curves[metric][self.best_epoch - 1]


# The callback returns True to stop training (e.g. because the trial was pruned).
EpochCallback = Callable[[EpochMetrics], bool | None]
# Called with the freshly built model before the optimizer is made: load weights, freeze.
PrepareModel = Callable[[TrainerModel], None]
# A model family's builder: (config, input_shape without the batch dimension, n_classes);
# n_classes is 1 for regression, whose one output is read as the standardized target.
ModelBuilder = Callable[[TrainConfig, tuple[int, ...], int], TrainerModel]


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on (x, y), in evaluation mode."""
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = 0
    for start in range(0, x.shape[0], EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH])
        target = y[start : start + EVAL_BATCH]
        total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train(was_training)
    n = max(int(x.shape[0]), 1)
    return total_loss / n, correct / n


@torch.inference_mode()
def evaluate_regression(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target_std: float = 1.0
) -> dict[str, float]:
    """Regression metrics of `model` on (x, y), y (n,) standardized targets, in eval mode.

    `loss`: mean squared error in standardized units; `rmse` = sqrt(MSE) and `mae` = mean
    |y - ŷ| in the target's original units (standardized errors times `target_std`);
    `r2` = 1 - SS_res / SS_tot with SS_tot = Σ(y - ȳ)² about the split's own mean (the
    coefficient of determination as scikit-learn's `r2_score` computes it; Draper & Smith,
    Applied Regression Analysis, §1.4). R² is unit-free, so it is computed on standardized
    values. A split with constant targets has R² 0 (nothing to explain).
    """
    was_training = model.training
    model.eval()
    sq = torch.zeros((), dtype=torch.float64, device=x.device)
    ab = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], EVAL_BATCH):
        pred = model(x[start : start + EVAL_BATCH])[:, 0].double()
        err = pred - y[start : start + EVAL_BATCH].double()
        sq += (err * err).sum()
        ab += err.abs().sum()
    model.train(was_training)
    n = max(int(x.shape[0]), 1)
    ss_res, sum_abs = float(sq), float(ab)  # one host sync each, per evaluation
    ss_tot = float(((y.double() - y.double().mean()) ** 2).sum()) if x.shape[0] else 0.0
    mse = ss_res / n
    return {
        "loss": mse,
        "rmse": math.sqrt(mse) * target_std,
        "mae": sum_abs / n * target_std,
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
    }


def evaluate_test(model: nn.Module, data: TensorData) -> dict[str, float]:
    """The test split's metrics: `test_accuracy` (and `test_loss`) for classification;
    `test_rmse`, `test_mae`, `test_r2` (and `test_loss`) for regression. Empty when the
    dataset has no test split."""
    if data.x_test.shape[0] == 0:
        return {}
    if data.task == "regression":
        m = evaluate_regression(model, data.x_test, data.y_test, data.target_std)
        return {f"test_{k}": v for k, v in m.items()}
    loss, acc = evaluate(model, data.x_test, data.y_test)
    return {"test_loss": loss, "test_accuracy": acc}


def batch_cost(task: Task, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mini-batch cost before penalties: cross-entropy of logits (batch, K) against class
    indices, or for regression the mean squared error of the one output (batch, 1)."""
    if task == "regression":
        return F.mse_loss(out[:, 0], target)
    return F.cross_entropy(out, target)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TensorData,
    config: TrainConfig,
    generator: torch.Generator,
    telemetry: GradientTelemetry | None = None,
) -> float:
    """One pass over a random permutation of the training split; returns the mean batch
    cost (cross-entropy, or MSE for regression, + L1 term).

    Per step: forward -> cost -> backward -> telemetry -> clip -> step.
    """
    model.train()
    n = data.x_train.shape[0]
    perm = torch.randperm(n, generator=generator, device="cpu").to(data.x_train.device)
    losses = torch.zeros((), device=data.x_train.device)
    n_batches = 0
    weights = weight_params(model) if config.l1 > 0 else []
    params = [p for p in model.parameters() if p.requires_grad]
    for start in range(0, n, config.batch_size):
        idx = perm[start : start + config.batch_size]
        loss = batch_cost(data.task, model(data.x_train[idx]), data.y_train[idx])
        if weights:
            loss = loss + config.l1 * l1_penalty(weights)  # cost + λ·Σ|W|
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if telemetry is not None:
            telemetry.after_backward()
        clip_gradients(params, config.grad_clip, config.grad_clip_threshold)
        optimizer.step()
        losses += loss.detach()
        n_batches += 1
    return float(losses) / max(n_batches, 1)  # one device sync per epoch, not per step


def _check_finite(epoch: int, **losses: float) -> None:
    for name, value in losses.items():
        if not math.isfinite(value):
            raise DivergedError(f"diverged at epoch {epoch}: {name}={value}")


def _evaluate_epoch(
    model: nn.Module, data: TensorData, telemetry: GradientTelemetry | None
) -> dict[str, float]:
    """The epoch's train and validation curve values (telemetry watches the validation pass)."""
    watching = telemetry.watching_units() if telemetry is not None else nullcontext()
    if data.task == "regression":
        train = evaluate_regression(model, data.x_train, data.y_train, data.target_std)
        with watching:
            val = evaluate_regression(model, data.x_val, data.y_val, data.target_std)
        return {
            "train_loss": train["loss"],
            "val_loss": val["loss"],
            "val_rmse": val["rmse"],
            "val_mae": val["mae"],
            "val_r2": val["r2"],
        }
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
    with watching:
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
    return {
        "train_loss": train_loss,
        "val_loss": val_loss,
        "train_accuracy": train_acc,
        "val_accuracy": val_acc,
    }


def fit(
    config: TrainConfig,
    data: TensorData,
    on_epoch: EpochCallback | None = None,
    *,
    prepare_model: PrepareModel | None = None,
    model_builder: ModelBuilder | None = None,
    checkpoint: Checkpointer | None = None,
    resume: TrainingState | None = None,
) -> FitResult:
    """Train a model per `config` on `data`; call `on_epoch` after every epoch.

    `model_builder` builds the model instead of `build_model` (plug-in model families).
    `prepare_model(model)` runs after the model is built and before the optimizer is made;
    the optimizer only gets the parameters that still require gradients.

    Per epoch: train -> evaluate -> report (`on_epoch`) -> schedule the next epoch's
    learning rate -> early stopping -> a checkpoint, when `checkpoint` says one is due.
    With early stopping on, the returned model holds the weights of `best_epoch` (by
    `config.monitor`); otherwise those of the last epoch.

    `resume`: a state `checkpoint` saved (`trainer.state`) to continue from: training goes
    on at epoch `resume.epoch + 1`, `on_epoch` is called for the new epochs only, and the
    result's curves hold every epoch. Raises ValueError if `config` differs from the
    state's in anything but `seed` and `max_epochs` (`trainer.state.resume_problem`).
    """
    metrics = curve_metrics(data.task)
    if config.monitor not in metrics:
        raise ValueError(
            f"monitor must be one of {list(metrics)} for {data.task}, got {config.monitor!r}"
        )
    config_dict = dataclasses.asdict(config)
    if resume is not None and (problem := resume_problem(resume, config_dict)) is not None:
        raise ValueError(f"cannot resume: {problem}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    input_shape = tuple(data.x_train.shape[1:])
    if model_builder is None:
        model = build_model(config, input_shape, data.n_classes, layout=data.layout)
    else:
        model = model_builder(config, input_shape, data.n_classes)
        if not isinstance(model, TrainerModel):
            raise TypeError(
                f"a model family's builder must return a trainer.model.TrainerModel "
                f"(inputs, blocks, head), got {type(model).__name__}"
            )
    model = model.to(data.x_train.device)
    if prepare_model is not None:
        prepare_model(model)
    optimizer = build_optimizer(config, model)
    schedule = EpochSchedule(config, optimizer)
    telemetry = GradientTelemetry(model) if config.telemetry else None
    stopper = None
    if config.early_stopping_patience > 0:
        stopper = EarlyStopping(
            config.early_stopping_patience,
            config.early_stopping_min_delta,
            metric_mode(config.monitor),
        )
    result = FitResult(model=model, curves={m: [] for m in metrics})
    if resume is not None:
        restore_state(
            resume,
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            stopper=stopper,
            generator=generator,
        )
        result.curves = {name: list(values) for name, values in resume.curves.items()}
        result.epochs_run = result.best_epoch = result.resumed_from = resume.epoch
    if checkpoint is not None:
        checkpoint.start(result.resumed_from)

    for epoch in range(result.resumed_from + 1, config.max_epochs + 1):
        started = time.perf_counter()
        lr = float(optimizer.param_groups[0]["lr"])
        batch_loss = train_epoch(model, optimizer, data, config, generator, telemetry)
        _check_finite(epoch, train_loss=batch_loss)
        values = _evaluate_epoch(model, data, telemetry)
        _check_finite(epoch, train_loss=values["train_loss"], val_loss=values["val_loss"])
        values["lr"] = lr
        if telemetry is not None:
            values.update(telemetry.epoch_values())
        values["epoch_seconds"] = time.perf_counter() - started
        for name, value in values.items():
            result.curves.setdefault(name, []).append(value)
        result.epochs_run = result.best_epoch = epoch
        metric = values[config.monitor]
        no_progress = stopper is not None and stopper.update(epoch, metric, model)
        if on_epoch is not None and on_epoch(EpochMetrics(epoch=epoch, values=values)):
            result.stopped_by_callback = True
            break
        if no_progress:
            result.stopped_early = True
            break
        schedule.step(metric)
        if checkpoint is not None and checkpoint.due(epoch):
            state = capture_state(
                epoch,
                config_dict,
                model=model,
                optimizer=optimizer,
                schedule=schedule,
                stopper=stopper,
                curves=result.curves,
                generator=generator,
            )
            checkpoint.save(state)
    if stopper is not None and stopper.best_epoch:
        stopper.restore(model)
        result.best_epoch = stopper.best_epoch
    return result
