"""A study's `notify` spec and the webhook events it asks for, recorded in the outbox.

Each event is inserted into `hpo_webhook_deliveries` by the transaction that decides it (the
study's status change, or the check of a finished trial against the study's best so far), so
it exists exactly once per occurrence and survives any crash; `webhooks.deliver_due` sends it.

Events: `completed` (the budget, the deadline or the grid is used up), `failed` (more than
`budget.max_failed_trials` trials failed), `stopped` (a user stopped it), `best_improved` (a
trial finished with a better objective value than every earlier trial of the study).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import Study, utcnow
from service.core.db.outbox import WebhookDelivery
from service.core.types import Strict

log = logging.getLogger("hpo.webhooks")

Event = Literal["completed", "failed", "stopped", "best_improved"]
EVENTS: tuple[Event, ...] = ("completed", "failed", "stopped", "best_improved")
MAX_URL_LENGTH = 2000


class NotifySpec(Strict):
    """Where and what to notify: `webhook` gets a signed JSON POST for each of `events`."""

    webhook: str = Field(
        max_length=MAX_URL_LENGTH, description="http(s) URL that receives the events"
    )
    events: list[Event] = Field(
        default_factory=lambda: list(EVENTS), min_length=1, max_length=len(EVENTS)
    )

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            port = parts.port  # raises on a port out of range or not a number
        except ValueError as e:
            raise ValueError(f"not a URL: {e}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("must name a host")
        if any(c.isspace() for c in value) or port == 0:
            raise ValueError("must be a URL without spaces and with a usable port")
        return value

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[Event]) -> list[Event]:
        if len(set(events)) != len(events):
            raise ValueError("lists an event twice")
        return events


def notify_of(spec: dict[str, Any]) -> NotifySpec | None:
    """The stored spec's `notify`, or None. It was validated at submission; should it not
    validate now (a spec stored by another version), it is ignored and logged: an event
    must never break the transaction that changes a study's status."""
    raw = spec.get("notify")
    if raw is None:
        return None
    try:
        return NotifySpec.model_validate(raw)
    except ValidationError as e:
        log.warning("ignoring a stored notify spec that does not validate: %s", e)
        return None


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


def _body(event: str, study: Study, moment: datetime, **extra: Any) -> str:
    payload: dict[str, Any] = {
        "event": event,
        "study": {"id": study.id, "name": study.name, "status": study.status},
        "timestamp": _stamp(moment),
        **extra,
    }
    # allow_nan=False: receivers parse strict JSON; values here are finite (checked by callers).
    return json.dumps(payload, sort_keys=True, allow_nan=False, separators=(",", ":"))


def record_status_event(session: Session, study: Study) -> None:
    """Record the event of `study`'s new terminal status (completed, failed or stopped), if
    its spec asks for it, in the caller's transaction: the one that changed the status, so
    the event exists exactly when the change does."""
    notify = notify_of(study.spec)
    if notify is None or study.status not in notify.events:
        return
    moment = study.finished_at or utcnow()
    extra: dict[str, Any] = {}
    if study.error:
        extra["error"] = study.error
    session.add(
        WebhookDelivery(
            study_id=study.id,
            event=study.status,
            url=notify.webhook,
            body=_body(study.status, study, moment, **extra),
            next_attempt_at=utcnow(),
        )
    )


def record_trial_result(
    url: str,
    study_id: int,
    *,
    trial_id: int,
    number: int,
    value: float,
    params: dict[str, Any],
    maximize: bool,
) -> bool:
    """After a trial finished COMPLETE with `value`: if the study's spec asks for
    `best_improved` and `value` beats every earlier trial's, record the event. True if it
    did. The check and the insert hold the study's row lock (a write first: SQLite's write
    lock, PostgreSQL's row lock), so of two trials finishing at once the later one compares
    against the earlier's value; a retried call finds its own row (unique per trial)."""
    with session_scope(url) as session:
        session.execute(  # take the lock before reading
            update(Study).where(Study.id == study_id).values(updated_at=Study.updated_at)
        )
        study = session.get(Study, study_id)
        if study is None:
            return False
        notify = notify_of(study.spec)
        if notify is None or "best_improved" not in notify.events:
            return False
        best_of = func.max if maximize else func.min
        best = session.scalar(
            select(best_of(WebhookDelivery.value)).where(
                WebhookDelivery.study_id == study_id, WebhookDelivery.event == "best_improved"
            )
        )
        if best is not None and not (value > best if maximize else value < best):
            return False
        trial = {"id": trial_id, "number": number, "value": value, "params": params}
        now = utcnow()
        try:
            with session.begin_nested():
                session.add(
                    WebhookDelivery(
                        study_id=study_id,
                        event="best_improved",
                        trial_number=number,
                        value=value,
                        url=notify.webhook,
                        body=_body("best_improved", study, now, trial=trial, previous_best=best),
                        next_attempt_at=now,
                    )
                )
        except IntegrityError:
            return False  # recorded by an earlier attempt of this call
        return True
