"""The background thread that drains the outbox: every `outbox_poll_seconds` it sends due
webhook deliveries and, with `HPO_MLFLOW_TRACKING_URI` set, exports due trials. It runs in
every worker process beside the training thread, which it never blocks; a stopping worker
keeps sending what falls due within `outbox_flush_seconds` (a study's last events are
decided by its last trial, just before an `--until-idle` worker leaves)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from service.core.db.outbox import MlflowExport, WebhookDelivery
from service.integrations.config import IntegrationSettings
from service.integrations.mlflow_export import export_due
from service.integrations.outbox import next_due_in
from service.integrations.webhooks import deliver_due

log = logging.getLogger("hpo.outbox")


def drain_once(url: str, settings: IntegrationSettings) -> int:
    """Send what is due now (webhooks, then MLflow exports); how many went out."""
    return deliver_due(url, settings) + export_due(url, settings)


def _pending_within(url: str, settings: IntegrationSettings, seconds: float) -> bool:
    models: list[Any] = [WebhookDelivery]
    if settings.mlflow_tracking_uri is not None:
        models.append(MlflowExport)
    waits = [next_due_in(url, m) for m in models]
    return any(w is not None and w <= seconds for w in waits)


class Dispatcher:
    """Drains the outbox of the database at `url` in a daemon thread until `stop`."""

    def __init__(self, url: str, settings: IntegrationSettings | None = None) -> None:
        self.url = url
        self.settings = settings or IntegrationSettings()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)

    def start(self) -> Dispatcher:
        self._thread.start()
        return self

    def _drain(self) -> None:
        try:
            drain_once(self.url, self.settings)
        except Exception as e:  # the database is down, say: try again at the next poll
            log.warning("outbox: %s: %s", type(e).__name__, e)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.outbox_poll_seconds):
            self._drain()

    def stop(self) -> None:
        """Stop polling, then keep sending what falls due within `outbox_flush_seconds`."""
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + self.settings.outbox_flush_seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                if not _pending_within(self.url, self.settings, left):
                    return
            except Exception as e:
                log.warning("outbox: %s: %s", type(e).__name__, e)
                return
            self._drain()
            time.sleep(min(0.05, max(left, 0)))
