"""`hpo serve`: the API under uvicorn, with local worker processes beside it."""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from service.app.auth import check_at_startup
from service.app.main import create_app
from service.core.settings import Settings
from service.worker.supervisor import LocalWorkers

log = logging.getLogger("hpo.serve")


def serve(settings: Settings) -> None:
    check_at_startup(settings)  # refuses to serve with auth on and no token

    workers = LocalWorkers(settings)
    workers.start()
    log.info(
        "serving http://%s:%d with %d local worker(s) on %s",
        settings.host,
        settings.port,
        settings.workers,
        settings.database_url,
    )
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default
    # handler that would kill this process before the workers are stopped.
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(0))
    try:
        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            root_path=settings.root_path,
        )
        uvicorn.Server(config).run()
    finally:
        workers.stop()
