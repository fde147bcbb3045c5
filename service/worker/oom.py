"""Out of GPU memory: the trial is trained once more with half the batch size.

The smaller batch is recorded on the trial (`hpo_trials.oom_batch_size` and the Optuna user
attribute `oom_batch_size`); the first attempt's curve points are dropped so that the
re-run's epochs are stored once.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from functools import partial

import optuna
import torch
from sqlalchemy import delete, update

from service.core.db.engine import session_scope
from service.core.db.models import CHECKPOINT_KIND, Artifact, CurvePoint, TrialRecord
from service.core.db.retry import retry_db
from trainer import FitResult, TrainConfig

log = logging.getLogger("hpo.worker")


def fit_with_oom_retry(
    fit_once: Callable[[TrainConfig], FitResult],
    config: TrainConfig,
    *,
    device: str,
    on_retry: Callable[[int], None],
) -> FitResult:
    """`fit_once(config)`; out of GPU memory, free it, call `on_retry(half)` and
    `fit_once` with half the batch size. Raises `torch.cuda.OutOfMemoryError` naming both
    batch sizes if the second attempt runs out too (or the batch size was already 1)."""
    try:
        return fit_once(config)
    except torch.cuda.OutOfMemoryError as e:
        first = _first_line(e)
    # Outside the except block: the traceback's frames (and their tensors) are gone.
    free_gpu_memory(device)
    half = config.batch_size // 2
    if half < 1:
        raise torch.cuda.OutOfMemoryError(f"{first} (batch_size 1)")
    on_retry(half)
    try:
        return fit_once(dataclasses.replace(config, batch_size=half))
    except torch.cuda.OutOfMemoryError as e:
        raise torch.cuda.OutOfMemoryError(
            f"{_first_line(e)} (also with batch_size {half}, half of {config.batch_size})"
        ) from None


def record_oom_retry(
    url: str, record_id: int, trial: optuna.Trial, trial_id: int, half: int
) -> None:
    """Record the re-run's batch size `half` on the trial and drop its partial curves,
    retrying through database outages."""
    log.warning("trial %d: out of GPU memory; again with batch_size %d", trial.number, half)
    retry_db(partial(_record, url, record_id, trial, trial_id, half), "record OOM")


def free_gpu_memory(device: str) -> None:
    """Give the CUDA caching allocator's free blocks back (no-op off CUDA)."""
    if device.startswith("cuda"):
        gc.collect()  # tensors held by reference cycles (e.g. a traceback's frames)
        torch.cuda.empty_cache()


def _record(url: str, record_id: int, trial: optuna.Trial, trial_id: int, half: int) -> None:
    with session_scope(url) as session:
        session.execute(
            update(TrialRecord).where(TrialRecord.id == record_id).values(oom_batch_size=half)
        )
        # The partial curves of the first attempt would clash with the re-run's, and its
        # saved state (full batch) is not the re-run's.
        session.execute(delete(CurvePoint).where(CurvePoint.trial_id == trial_id))
        session.execute(
            delete(Artifact).where(Artifact.trial_id == trial_id, Artifact.kind == CHECKPOINT_KIND)
        )
    trial.set_user_attr("oom_batch_size", half)


def _first_line(e: torch.cuda.OutOfMemoryError) -> str:
    return str(e).splitlines()[0] if str(e) else "out of memory"
