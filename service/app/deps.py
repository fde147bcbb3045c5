"""Dependencies shared by the routers: the app's settings and the request's session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


# Where `AuthGate` leaves the session it looked the caller's token up in (the ASGI scope's
# state), so that the request goes on in that session, and closes it after the response.
GATE_SESSION_KEY = "hpo_session"


def get_session(request: Request, settings: SettingsDep) -> Iterator[Session]:
    """The request's unit of work: one session, committed when the route returns, rolled
    back when it raises, closed always. Optuna's storage keeps its own sessions."""
    gate_session: Session | None = request.scope.get("state", {}).get(GATE_SESSION_KEY)
    if gate_session is not None:
        with gate_session.begin():
            yield gate_session
        return
    with session_scope(settings.database_url) as session:
        yield session


# scope="function": commit before the response is sent, so a client that got its 201 finds
# the row with its next request.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
