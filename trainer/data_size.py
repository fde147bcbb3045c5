"""Learning curves over training-set size (TECHNIQUES.md §9).

Train one configuration on 10/25/50/100% of the training split (stratified subsamples,
validated on the full validation split) and read the result: if validation still improves
with more data, collecting data helps (variance); if train and validation converged
together, more data will not help (bias).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from trainer.config import TrainConfig
from trainer.data import TensorData
from trainer.loop import EpochCallback, ModelBuilder, fit

FRACTIONS = (0.1, 0.25, 0.5, 1.0)

# Epochs at a fraction f are max_epochs / f (capped at this many times max_epochs), so
# every size gets about as many optimizer steps as the full split: sizes then differ in
# data only, not in how long they trained.
MAX_EPOCH_SCALE = 10

# "More data would help": over the last doubling of the data (50% -> 100%) the validation
# metric improved by at least this much (accuracy: absolute; loss: relative). Half a point
# of accuracy per doubling is more than seed noise on a few hundred validation rows ...
MIN_GAIN_ACCURACY = 0.005
MIN_GAIN_LOSS = 0.02
# ... or the train/validation accuracy gap at 100% is still at least this large: the
# curves have not met, so variance remains that more data reduces.
OPEN_GAP_ACCURACY = 0.05

HELPS = "more data would help"
NO_HELP = "more data will not help"


def subsample(data: TensorData, fraction: float, seed: int) -> TensorData:
    """A `fraction` of the training split, stratified by class for classification (at
    random, at least 2 rows, for regression); validation and test stay whole."""
    if fraction >= 1.0:
        return data
    y = data.y_train.cpu().numpy()
    idx = np.arange(len(y))
    if data.task == "regression":
        n_keep = max(round(fraction * len(y)), 2)
        stratify = None
    else:
        n_keep = max(round(fraction * len(y)), data.n_classes)
        counts = np.bincount(y)
        stratify = y if counts[counts > 0].min() >= 2 and n_keep < len(y) else None
    keep, _ = train_test_split(idx, train_size=n_keep, random_state=seed, stratify=stratify)
    keep_t = torch.from_numpy(np.sort(keep)).to(data.x_train.device)
    return replace(data, x_train=data.x_train[keep_t], y_train=data.y_train[keep_t])


@dataclass(frozen=True)
class SizePoint:
    """One size's final values. For regression the accuracy fields hold the score R²:
    validation `val_r2`, training 1 - the standardized training MSE (its R² on the whole
    training split, whose standardized targets have mean 0 and variance 1)."""

    fraction: float
    n_train: int
    epochs: int
    train_loss: float
    val_loss: float
    train_accuracy: float
    val_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "n_train": self.n_train,
            "epochs": self.epochs,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
        }


def epochs_for(fraction: float, max_epochs: int) -> int:
    return min(math.ceil(max_epochs / fraction), MAX_EPOCH_SCALE * max_epochs)


def train_at_size(
    config: TrainConfig,
    data: TensorData,
    fraction: float,
    on_epoch: EpochCallback | None = None,
    model_builder: ModelBuilder | None = None,
) -> SizePoint:
    """Train `config` on a stratified `fraction` of the training split, for as many optimizer
    steps as `config.max_epochs` on the whole split; `model_builder` as in `fit`."""
    part = subsample(data, fraction, config.seed)
    epochs = epochs_for(fraction, config.max_epochs)
    result = fit(replace(config, max_epochs=epochs), part, on_epoch, model_builder=model_builder)
    c = result.curves
    return SizePoint(
        fraction=fraction,
        n_train=int(part.x_train.shape[0]),
        epochs=result.epochs_run,
        train_loss=c["train_loss"][-1],
        val_loss=c["val_loss"][-1],
        train_accuracy=c["train_accuracy"][-1]
        if "train_accuracy" in c
        else 1 - c["train_loss"][-1],
        val_accuracy=c["val_accuracy"][-1] if "val_accuracy" in c else c["val_r2"][-1],
    )


def learning_curve(
    config: TrainConfig,
    data: TensorData,
    fractions: Sequence[float] = FRACTIONS,
    on_epoch: EpochCallback | None = None,
    on_point: Callable[[SizePoint], None] | None = None,
    model_builder: ModelBuilder | None = None,
) -> list[SizePoint]:
    """One `SizePoint` per fraction (in the given order), each reported to `on_point` as
    it is done. The model is `config.family`'s, or `model_builder`'s for a plug-in family."""
    points = []
    for f in fractions:
        point = train_at_size(config, data, f, on_epoch, model_builder)
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points


def conclude(points: Sequence[SizePoint], metric: str = "val_accuracy") -> dict[str, Any]:
    """{"verdict", "explanation", "evidence"} from points sorted by size."""
    pts = sorted(points, key=lambda p: p.fraction)
    if len(pts) < 2:
        raise ValueError("a learning curve needs at least two sizes")
    prev, last = pts[-2], pts[-1]
    if metric == "val_loss":
        gain = (prev.val_loss - last.val_loss) / prev.val_loss if prev.val_loss > 0 else 0.0
        improving = gain >= MIN_GAIN_LOSS
    else:
        gain = last.val_accuracy - prev.val_accuracy
        improving = gain >= MIN_GAIN_ACCURACY
    gap = last.train_accuracy - last.val_accuracy
    open_gap = gap >= OPEN_GAP_ACCURACY
    evidence: dict[str, Any] = {
        "metric": metric,
        "gain_last_doubling": gain,
        "from_fraction": prev.fraction,
        "to_fraction": last.fraction,
        "train_val_accuracy_gap_at_full": gap,
        "val_accuracy_by_fraction": {str(p.fraction): p.val_accuracy for p in pts},
        "val_loss_by_fraction": {str(p.fraction): p.val_loss for p in pts},
        # Diminishing returns show as shrinking gains from one size to the next.
        "val_accuracy_gain_by_step": [
            b.val_accuracy - a.val_accuracy for a, b in itertools.pairwise(pts)
        ],
    }
    name = "val accuracy" if metric != "val_loss" else "val loss (relative)"
    if improving or open_gap:
        why = []
        if improving:
            why.append(
                f"{name} still improved by {gain:.3g} from {prev.fraction:.0%} to "
                f"{last.fraction:.0%} of the training split"
            )
        if open_gap:
            why.append(
                f"train and validation accuracy are still {gap:.3g} apart at full size "
                "(variance that more data reduces)"
            )
        return {"verdict": HELPS, "explanation": "; ".join(why), "evidence": evidence}
    level = (
        "at a poor level: more capacity or less regularization, not data, is what helps"
        if last.train_accuracy < 0.9
        else "at a good level"
    )
    return {
        "verdict": NO_HELP,
        "explanation": (
            f"{name} changed by only {gain:.3g} from {prev.fraction:.0%} to "
            f"{last.fraction:.0%} and train/validation accuracy are {gap:.3g} apart: the "
            f"curves have converged together {level}"
        ),
        "evidence": evidence,
    }
