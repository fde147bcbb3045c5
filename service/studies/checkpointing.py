"""The spec's `checkpoint` section: how often a running trial saves its training state, so
that a re-run of it (its worker died or was stopped) resumes instead of starting over.

Saving is by elapsed time by default: one save a minute costs the same whatever an epoch
takes (a tiny model's epochs last milliseconds, where saving every epoch would double the
database writes; a large model's last many minutes, where it is cheap), and a dead worker
loses at most about a minute plus one epoch. `every_epochs` adds (or, with
`every_seconds: null`, replaces it with) a save every k epochs.
"""

from __future__ import annotations

from pydantic import Field

from service.core.types import MAX_COUNT, Strict

DEFAULT_EVERY_SECONDS = 60.0
MAX_EVERY_SECONDS = 1e9  # as a study's timeout: about 31 years


class CheckpointSpec(Strict):
    """Save the trial's state at the end of an epoch once either interval has passed since
    the last save (both null: never; a re-run then starts from epoch 1)."""

    every_epochs: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="save every k epochs (default: by time only)"
    )
    every_seconds: float | None = Field(
        DEFAULT_EVERY_SECONDS,
        ge=1.0,
        le=MAX_EVERY_SECONDS,
        description="save when this many seconds passed since the last save",
    )
