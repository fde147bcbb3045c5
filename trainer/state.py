"""A run's full training state at an epoch's end, so that an interrupted run resumes exactly.

`fit(config, data, checkpoint=Checkpointer(save, every_epochs=...))` hands `save` a
`TrainingState` at the end of every due epoch; `fit(config, data, resume=state)` continues
from it: epoch `state.epoch + 1` onwards, with the curves of epochs 1..`state.epoch` already
in the result. What a state holds is everything the next epoch reads:

- the model's and the optimizer's state dicts (moments, step counts, learning rates),
- the learning-rate schedule's state (LambdaLR's epoch counter, ReduceLROnPlateau's best
  and bad-epoch count),
- early stopping's best score, best epoch, bad-epoch count and the best epoch's weights,
- the curves so far (per-epoch telemetry is accumulated within an epoch only, so nothing
  else of it outlives an epoch's end),
- the random number generators: torch's global CPU generator (dropout, input noise,
  augmentation), CUDA's when it was used, numpy's and Python's global ones, and the
  generator that draws each epoch's shuffling permutation.

On the CPU a resumed run is bit-for-bit the uninterrupted one (tests/test_trainer_resume.py).
`state_bytes`/`load_state` store it as one `torch.save` file of tensors and plain values,
read back with `weights_only=True` (no arbitrary unpickling).
"""

from __future__ import annotations

import dataclasses
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.schedules import EarlyStopping, EpochSchedule

FORMAT = 1


@dataclass
class TrainingState:
    """Everything `fit` needs to continue after epoch `epoch` (1-based, completed)."""

    epoch: int
    config: dict[str, Any]  # dataclasses.asdict(TrainConfig) of the run that saved it
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    early_stopping: dict[str, Any] | None
    curves: dict[str, list[float]]
    rng: dict[str, Any] = field(default_factory=dict)

    def value(self, metric: str, epoch: int) -> float:
        """`metric`'s curve value at `epoch` (1-based, at most `self.epoch`)."""
        return self.curves[metric][epoch - 1]


def _cpu(tree: Any, *, clone: bool = True) -> Any:
    """`tree` (dicts, lists, tuples) with every tensor detached and on the CPU; copied
    (`clone`), or shared where it already was on the CPU."""
    if isinstance(tree, torch.Tensor):
        tensor = tree.detach()
        if tensor.device.type != "cpu":
            return tensor.cpu()  # a copy already
        return tensor.clone() if clone else tensor
    if isinstance(tree, dict):
        return {k: _cpu(v, clone=clone) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cpu(v, clone=clone) for v in tree)
    return tree


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """The states of torch's, CUDA's (if initialized), numpy's and Python's global
    generators and of `generator` (the epoch permutations), as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    assert isinstance(np_state, dict)
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": _python_state(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _python_state(state: Any) -> Any:
    """random.getstate() as lists (what `weights_only` loading keeps) and back as tuples."""
    if isinstance(state, (list, tuple)):
        return [_python_state(v) for v in state]
    return state


def _python_tuple(state: Any) -> Any:
    if isinstance(state, list):
        return tuple(_python_tuple(v) for v in state)
    return state


def restore_rng(rng: dict[str, Any], generator: torch.Generator) -> None:
    """Set every generator `capture_rng` captured back to its captured state. CUDA's is
    restored only when this process has CUDA (a CPU run never captured it)."""
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    np_rng = rng["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_rng["bit_generator"],
            "state": {"key": np_rng["key"].numpy().astype(np.uint32), "pos": np_rng["pos"]},
            "has_gauss": np_rng["has_gauss"],
            "gauss": np_rng["gauss"],
        }
    )
    random.setstate(_python_tuple(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        states = rng["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def state_bytes(state: TrainingState) -> bytes:
    """`state` as one `torch.save` file (tensors on the CPU)."""
    # Not dataclasses.asdict: it deep-copies every tensor.
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    payload = {"format": FORMAT, **_cpu(fields, clone=False)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_state(data: bytes) -> TrainingState:
    """The `TrainingState` stored by `state_bytes`; ValueError if `data` is not one."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        raise ValueError(f"not a training state: {type(e).__name__}: {e}") from None
    if not isinstance(payload, dict) or payload.pop("format", None) != FORMAT:
        raise ValueError(f"not a training state of this trainer (format {FORMAT})")
    names = {f.name for f in dataclasses.fields(TrainingState)}
    return TrainingState(**{k: v for k, v in payload.items() if k in names})


class Checkpointer:
    """Decides when `fit` saves its state and hands it to `save`: at the end of an epoch
    once `every_epochs` epochs or `every_seconds` seconds (whichever comes first; None:
    never by that measure) have passed since the last save, or since training started.

    `save(state)` runs in the training thread between two epochs; what it raises
    propagates out of `fit`.
    """

    def __init__(
        self,
        save: Callable[[TrainingState], None],
        *,
        every_epochs: int | None = None,
        every_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_epochs is not None and every_epochs < 1:
            raise ValueError(f"every_epochs must be at least 1, got {every_epochs}")
        if every_seconds is not None and not every_seconds > 0:
            raise ValueError(f"every_seconds must be positive, got {every_seconds}")
        self._save = save
        self.every_epochs = every_epochs
        self.every_seconds = every_seconds
        self._clock = clock
        self._last_epoch = 0
        self._last_time = clock()
        self.saved: list[int] = []  # the epochs saved, in order

    def start(self, epoch: int) -> None:
        """Training starts (or resumes) after epoch `epoch`: intervals count from now."""
        self._last_epoch = epoch
        self._last_time = self._clock()

    def due(self, epoch: int) -> bool:
        """Whether the state after epoch `epoch` is to be saved."""
        by_epochs = self.every_epochs is not None and epoch - self._last_epoch >= self.every_epochs
        by_time = (
            self.every_seconds is not None and self._clock() - self._last_time >= self.every_seconds
        )
        return by_epochs or by_time

    def save(self, state: TrainingState) -> None:
        """Hand `state` to the saver and restart both intervals."""
        self._save(state)
        self.saved.append(state.epoch)
        self.start(state.epoch)


# Fields of TrainConfig a resumed run may change: the seed only seeds what the restored
# state overwrites (initial weights, generators), and a run may be given more epochs.
RESUMABLE_CHANGES = frozenset({"seed", "max_epochs"})


def resume_problem(state: TrainingState, config: dict[str, Any]) -> str | None:
    """Why a run with `config` (dataclasses.asdict of its TrainConfig) cannot continue from
    `state`; None when it can."""
    changed = sorted(
        k
        for k in config.keys() | state.config.keys()
        if k not in RESUMABLE_CHANGES and config.get(k) != state.config.get(k)
    )
    if changed:
        return f"the configuration differs in {', '.join(changed)}"
    if state.epoch > int(config["max_epochs"]):
        return f"the state is of epoch {state.epoch}, past max_epochs={config['max_epochs']}"
    return None


def capture_state(
    epoch: int,
    config: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: EpochSchedule,
    stopper: EarlyStopping | None,
    curves: dict[str, list[float]],
    generator: torch.Generator,
) -> TrainingState:
    """The state after epoch `epoch`, copied to the CPU (training may go on changing the
    live tensors)."""
    return TrainingState(
        epoch=epoch,
        config=dict(config),
        model=_cpu(model.state_dict()),
        optimizer=_cpu(optimizer.state_dict()),
        schedule=_cpu(schedule.state_dict()),
        early_stopping=None if stopper is None else _cpu(stopper.state_dict()),
        curves={k: list(v) for k, v in curves.items()},
        rng=_cpu(capture_rng(generator)),
    )


def restore_state(
    state: TrainingState,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: EpochSchedule,
    stopper: EarlyStopping | None,
    generator: torch.Generator,
) -> None:
    """Load `state` into freshly built training objects (the model already on its device;
    the optimizer moves its state to its parameters' device)."""
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    schedule.load_state_dict(state.schedule)
    if stopper is not None and state.early_stopping is not None:
        stopper.load_state_dict(state.early_stopping)
    restore_rng(state.rng, generator)
