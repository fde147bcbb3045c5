"""Writing a trial's learning curves: one epoch's curve points in one statement."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from service.core.db.engine import session_scope
from service.core.db.models import CurvePoint
from service.core.db.retry import retry_db
from trainer import EpochMetrics


def write_epoch(url: str, trial_id: int, metrics: EpochMetrics) -> None:
    """Store every value of one epoch (train/val loss and metric, learning rate, gradient
    norms, epoch time) as curve points of the trial at step `metrics.epoch`, in one
    statement, retrying through database outages. Raises what `retry_db` gives up on."""
    retry_db(_EpochInsert(url, trial_id, metrics), "curve points")


@dataclass
class _EpochInsert:
    """One epoch's INSERT, callable again by `retry_db`."""

    url: str
    trial_id: int
    metrics: EpochMetrics
    attempts: int = 0

    def __call__(self) -> None:
        self.attempts += 1
        rows = [
            {"trial_id": self.trial_id, "step": self.metrics.epoch, "metric": k, "value": v}
            for k, v in self.metrics.values.items()
        ]
        try:
            with session_scope(self.url) as session:
                session.execute(insert(CurvePoint), rows)
        except IntegrityError:
            if self.attempts == 1:
                raise
            # An earlier attempt committed, then lost its connection before the reply.
