"""The spec's `fuse` section: how many trials of a study one worker trains at once as one
fused model (`trainer.fused`), and the device-hour budget's unit conversion.

Default off (`max_trials: 1`) on every device, CUDA included: a pack holds up to K of the
study's slots at once (fewer for the other studies sharing the workers) and its trials are
asked in parallel (TPE with `constant_liar`), which changes the search; a study opts in.
"""

from __future__ import annotations

from pydantic import Field

from service.core.types import Strict

MAX_FUSED_TRIALS = 256
MAX_DEVICE_HOURS = 1e6  # about 114 years of one device: any real budget fits


class FuseSpec(Strict):
    """Train up to `max_trials` claimed trials of the study together: a worker claims that
    many slots in one transaction and trains those whose configurations share a structure
    (`trainer.fused.structure_key`) as one batched model; 1: one trial at a time."""

    max_trials: int = Field(
        1, ge=1, le=MAX_FUSED_TRIALS, description="trials a worker claims and trains at once"
    )


def fused(max_trials: int) -> bool:
    """Whether a study with `fuse.max_trials` asks its sampler for parallel trials."""
    return max_trials > 1


def device_seconds_limit(device_hours: float | None) -> float | None:
    """`budget.device_hours` as the seconds stored on the study's row (None: no limit)."""
    return None if device_hours is None else device_hours * 3600.0
