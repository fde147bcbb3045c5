"""Claiming and settling rows of the outbox tables (`core.db.outbox`): a due row is claimed
with a conditional UPDATE that leases it, sent outside any transaction, then marked
delivered, or rescheduled with exponential back-off, or failed after its last attempt."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import or_, select, update

from service.core.db.engine import session_scope
from service.core.db.models import utcnow
from service.core.db.outbox import MlflowExport, WebhookDelivery

Row = type[WebhookDelivery] | type[MlflowExport]
M = TypeVar("M", WebhookDelivery, MlflowExport)
LEASE_S = 300.0  # a sender that died holding a row: the row is due again after this
MAX_ERROR = 2000  # characters of an error kept


def _key(model: Row) -> Any:
    return WebhookDelivery.id if model is WebhookDelivery else MlflowExport.trial_id


def _due(model: Row, now: Any) -> Any:
    return (
        model.state == "pending",
        model.next_attempt_at <= now,
        or_(model.lease_until.is_(None), model.lease_until < now),
    )


def claim_due(url: str, model: Row, limit: int = 20) -> list[int]:
    """Lease up to `limit` due rows of `model` (oldest first) and count an attempt on each;
    their keys. Rows leased by another sender are skipped."""
    now = utcnow()
    key = _key(model)
    with session_scope(url) as session:
        keys = session.scalars(
            select(key).where(*_due(model, now)).order_by(model.next_attempt_at, key).limit(limit)
        ).all()
    claimed = []
    for k in keys:
        with session_scope(url) as session:
            result = session.execute(
                update(model)
                .where(key == k, *_due(model, now))
                .values(lease_until=now + timedelta(seconds=LEASE_S), attempts=model.attempts + 1)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(int(k))
    return claimed


def settle(
    url: str,
    model: type[M],
    key: int,
    *,
    error: str | None,
    backoff_s: float,
    max_backoff_s: float,
    max_attempts: int,
    **done: Any,
) -> str:
    """Record a send's outcome: `delivered` (no `error`; `done` sets more columns), else
    `pending` again after backoff_s · 2^(attempts-1) (at most max_backoff_s), or `failed`
    once `max_attempts` sends failed. Returns the new state."""
    now = utcnow()
    with session_scope(url) as session:
        row = session.get(model, key)
        assert row is not None
        row.lease_until = None
        if error is None:
            row.state, row.delivered_at, row.last_error = "delivered", now, None
            for name, value in done.items():
                setattr(row, name, value)
        else:
            row.last_error = error[:MAX_ERROR]
            if row.attempts >= max_attempts:
                row.state = "failed"
            else:
                wait = min(backoff_s * 2 ** (row.attempts - 1), max_backoff_s)
                row.next_attempt_at = now + timedelta(seconds=wait)
        return str(row.state)


def next_due_in(url: str, model: Row) -> float | None:
    """Seconds until the earliest pending row of `model` is due (<= 0: due now); None when
    nothing is pending."""
    with session_scope(url) as session:
        first = session.scalar(
            select(model.next_attempt_at)
            .where(model.state == "pending")
            .order_by(model.next_attempt_at)
            .limit(1)
        )
    return None if first is None else (first - utcnow()).total_seconds()
