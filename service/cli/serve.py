"""`hpo serve`: the API under uvicorn, with local worker processes beside it."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from service.app.auth import check_at_startup
from service.app.main import create_app
from service.cli.logs import quiet_polling
from service.cli.options import CommandError
from service.core.settings import Settings
from service.worker.supervisor import LocalWorkers

log = logging.getLogger("hpo.serve")


def exit_code(signum: int) -> int:
    """The exit status of a command stopped cleanly by `signum`: 130 after Ctrl-C (SIGINT,
    as a shell reports it), 0 after SIGTERM (a service manager's ordinary stop)."""
    return 128 + signum if signum == signal.SIGINT else 0


def serve(settings: Settings) -> int:
    """Serve the API until SIGTERM or SIGINT, then stop the local workers; the exit code
    (`exit_code` of the signal). A second signal while the workers stop kills them.
    Raises `CommandError` when uvicorn cannot start (the port is taken, ...)."""
    check_at_startup(settings)  # refuses to serve with auth on and no token

    workers = LocalWorkers(settings)
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # uvicorn re-raises the signal it caught once it has shut down (and a signal may
        # come before it runs): the first one unwinds to the `finally` below, which stops
        # the workers; one more during that stop only hurries it.
        received.append(signum)
        if len(received) == 1:
            raise SystemExit(exit_code(signum))
        workers.hurry = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        workers.start()
        log.info(
            "serving http://%s:%d with %d local worker(s) on %s",
            settings.host,
            settings.port,
            settings.workers,
            settings.database_url,
        )
        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            root_path=settings.root_path,
            log_config=None,  # uvicorn's lines go through our handler (text or JSON)
        )
        if not settings.log_polling_requests:
            quiet_polling(settings.root_path)
        uvicorn.Server(config).run()
    except SystemExit as e:
        if not received:  # uvicorn could not start (it logged why): a failed command
            raise CommandError(
                f"could not serve on {settings.host}:{settings.port} (see the log above)"
            ) from e
        return int(e.code or 0)
    finally:
        workers.stop()
    return exit_code(received[0]) if received else 0
