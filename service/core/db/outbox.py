"""Tables of the outbox (issue 16 §7, §8): things to send out of the service, written in the
transaction that decides them and sent later by a background thread
(`service.integrations.dispatch`), so a crash between the two loses nothing and a slow or
failing receiver never blocks or fails a trial.

Both tables share the delivery columns: `state` (`pending` -> `delivered` or, after the last
attempt, `failed`), `attempts`, `next_attempt_at` (exponential back-off) and `lease_until`
(a sender claims a due row with a conditional UPDATE that sets it, so two processes never
send one row at the same time; a sender that dies leaves a lease that expires).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db.models import Base, utcnow


class DeliveryColumns:
    """The columns of a row to send, shared by both tables (a mixin: copied into each)."""

    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(), default=None)


class WebhookDelivery(DeliveryColumns, Base):
    """One event of a study to POST to its `notify.webhook`, with the exact body to sign."""

    __tablename__ = "hpo_webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    # best_improved: the trial and its value (the study's best so far is the best of these).
    trial_number: Mapped[int | None] = mapped_column(Integer, default=None)
    value: Mapped[float | None] = mapped_column(Float, default=None)
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)  # the JSON payload, signed byte for byte

    __table_args__ = (
        # One event per trial (a retried insert cannot double it); the prefix serves "the
        # study's best so far" (the best value among its best_improved rows).
        Index(
            "uq_hpo_webhook_deliveries_event",
            "study_id",
            "event",
            "trial_number",
            unique=True,
        ),
        Index("ix_hpo_webhook_deliveries_due", "state", "next_attempt_at"),
    )


class MlflowExport(DeliveryColumns, Base):
    """A finished trial to log as an MLflow run."""

    __tablename__ = "hpo_mlflow_exports"

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # Optuna's trial_id
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (Index("ix_hpo_mlflow_exports_due", "state", "next_attempt_at"),)
