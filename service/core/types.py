"""Types shared by the API schemas of every domain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# The database stores naive UTC; answers carry the zone ("...Z"), as RFC 3339 date-time wants.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
