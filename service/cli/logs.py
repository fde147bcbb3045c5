"""Log output of `hpo serve` and `hpo worker`: text or JSON lines (HPO_LOG_FORMAT), and
uvicorn's access log without the polling requests (HPO_LOG_POLLING_REQUESTS turns them on)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attributes every LogRecord has; the others came as `extra=` and go into a JSON line.
STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (ISO 8601, UTC), `level`, `logger`, `message`, the
    record's `extra=` fields (e.g. a trial's epoch, value and seconds), and `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log at `level` to stderr, as text lines (time, level, logger, message) or `json`;
    Optuna's and Alembic's chatter only from warnings."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("optuna").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


# What the dashboard and monitoring poll: read requests of studies, trials, workers, health
# and metrics (a query string or sub-path included).
POLLING = re.compile(r"^/(api/(studies|trials|workers|health)|metrics)(/|\?|$)")


class PollingFilter(logging.Filter):
    """Drops uvicorn access-log records of successful polling requests (GET or HEAD of
    `POLLING` paths, status below 400), which the dashboard repeats every few seconds.
    Submissions, deletions and errors are still logged. `root_path`: the prefix a reverse
    proxy serves the app under, which uvicorn puts in front of the logged path."""

    def __init__(self, root_path: str = "") -> None:
        super().__init__()
        self.root_path = root_path.rstrip("/")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's access record: (client, method, path with query, http version, status)
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        _client, method, path, _version, status = args
        if method not in ("GET", "HEAD") or not isinstance(status, int) or status >= 400:
            return True
        path = str(path)
        if self.root_path and path.startswith(self.root_path):
            path = path[len(self.root_path) :]
        return not POLLING.match(path)


def quiet_polling(root_path: str = "") -> None:
    """Leave the polling requests out of uvicorn's access log (call after uvicorn's
    `Config`, which configures that logger)."""
    logging.getLogger("uvicorn.access").addFilter(PollingFilter(root_path))
