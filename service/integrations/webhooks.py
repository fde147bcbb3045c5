"""Sending recorded webhook events (`notify`): a POST of the stored JSON body, signed with
HMAC-SHA256 over the raw body when `HPO_WEBHOOK_SECRET` is set.

Headers: `X-HPO-Event` (the event), `X-HPO-Delivery` (the delivery's id: the same on every
retry, so a receiver can drop a repeat), `X-HPO-Signature: sha256=<hex>` with
hex = HMAC-SHA256(secret, body). A 2xx answer delivers it; anything else (an error status,
a refused connection, a timeout) is retried with exponential back-off (`outbox.settle`).
Delivery is at least once: a receiver that answered but whose answer was lost gets the same
delivery id again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import urlsplit

import httpx

from service.core.db.engine import session_scope
from service.core.db.outbox import WebhookDelivery
from service.integrations.config import IntegrationSettings
from service.integrations.outbox import claim_due, settle

log = logging.getLogger("hpo.webhooks")

SIGNATURE_HEADER = "X-HPO-Signature"


def signature(secret: str, body: bytes) -> str:
    """The `X-HPO-Signature` value of `body`: ``sha256=`` + hex HMAC-SHA256 with `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_due(url: str, settings: IntegrationSettings) -> int:
    """Send every due webhook delivery once; how many were delivered now. Never raises for a
    receiver's failure (that is recorded on the row and retried later)."""
    delivered = 0
    secret = settings.webhook_secret
    keys = claim_due(url, WebhookDelivery)
    if not keys:
        return 0
    with httpx.Client(timeout=settings.webhook_timeout_seconds) as client:
        for key in keys:
            with session_scope(url) as session:
                row = session.get(WebhookDelivery, key)
                assert row is not None
                target, body, event = row.url, row.body.encode(), row.event
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "hpo-webhooks",
                "X-HPO-Event": event,
                "X-HPO-Delivery": str(key),
            }
            if secret is not None:
                headers[SIGNATURE_HEADER] = signature(secret.get_secret_value(), body)
            error: str | None = None
            try:
                answer = client.post(target, content=body, headers=headers)
                if not answer.is_success:
                    error = f"HTTP {answer.status_code}"
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            state = settle(
                url,
                WebhookDelivery,
                key,
                error=error,
                backoff_s=settings.webhook_backoff_seconds,
                max_backoff_s=settings.webhook_max_backoff_seconds,
                max_attempts=settings.webhook_max_attempts,
            )
            if error is None:
                delivered += 1
            else:
                host = urlsplit(target).hostname  # not the URL: it may carry credentials
                log.warning("webhook %s (%s) to %s: %s; now %s", key, event, host, error, state)
    return delivered
