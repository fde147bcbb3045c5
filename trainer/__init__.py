"""Pure PyTorch training: config -> data, model, optimizer, loop.

No HTTP, no database, no Optuna: usable from a notebook on its own.
"""

from trainer.config import TrainConfig
from trainer.data import DataSplits, TensorData, load_dataset
from trainer.loop import DivergedError, EpochMetrics, FitResult, evaluate, evaluate_test, fit

__all__ = [
    "DataSplits",
    "DivergedError",
    "EpochMetrics",
    "FitResult",
    "TensorData",
    "TrainConfig",
    "evaluate",
    "evaluate_test",
    "fit",
    "load_dataset",
]
