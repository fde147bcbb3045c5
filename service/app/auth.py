"""Who may call the API: one dependency applied to every route of the app.

When auth is on, every `/api/...` route except `/api/health`, and `/metrics`, want
`Authorization: Bearer <token>`. Reading (GET, HEAD, OPTIONS) needs the `read` role,
anything else `submit`, and `/metrics` the `metrics` role (which `read` and above include).
Whether a `submit` token owns the study, trial or dataset a route acts on is decided by the
route's own path dependency (`service/app/ownership.py`), on the value the route uses.
`AuthGate`, a middleware, answers the 401s before a request body is even read.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.datastructures import Headers

from service.access.bootstrap import ensure_bootstrap_token, read_token_file
from service.access.tokens import Principal, active_token_count, verify_token
from service.app.deps import GATE_SESSION_KEY, SessionDep
from service.core.db.engine import get_sessionmaker, session_scope
from service.core.errors import Forbidden, TokenError
from service.core.settings import Settings

log = logging.getLogger("hpo.auth")

OPEN_PATHS = frozenset({"/api/health"})
METRICS_PATH = "/metrics"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Declares the scheme in the OpenAPI document; the header is parsed below for clear errors.
bearer_scheme = HTTPBearer(
    auto_error=False,
    description="an API token from `hpo token create` (needed when auth is on)",
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_required(settings: Settings) -> bool:
    if settings.auth == "auto":
        return not is_loopback(settings.host)
    return settings.auth == "required"


def check_at_startup(settings: Settings) -> None:
    """Stores the bootstrap token (`HPO_BOOTSTRAP_TOKEN_FILE`) if one is configured, logs the
    auth mode; refuses to serve with auth on and no token to log in with, or with a bootstrap
    file that cannot be read or holds no well-formed token."""
    if settings.bootstrap_token_file is not None:
        try:
            token = read_token_file(settings.bootstrap_token_file)
        except TokenError as e:
            raise SystemExit(str(e)) from e
        with session_scope(settings.database_url) as session:
            ensure_bootstrap_token(session, token)
    if not auth_required(settings):
        if is_loopback(settings.host):
            log.warning(
                "auth is OFF: anyone who can connect to %s:%d can submit studies "
                "(HPO_AUTH=required or `hpo serve --auth required` turns it on)",
                settings.host,
                settings.port,
            )
        else:
            log.warning(
                "auth is OFF on %s (HPO_AUTH=off): every client that reaches this address "
                "can submit and stop studies",
                settings.host,
            )
        return
    with session_scope(settings.database_url) as session:
        n_tokens = active_token_count(session)
    if n_tokens == 0:
        raise SystemExit(
            f"auth is on (listening on {settings.host}, HPO_AUTH={settings.auth}) but no API "
            "token exists; create one first: hpo token create --name admin --role admin"
        )
    log.info("auth is on: API calls need a bearer token")


def app_path(path: str, root_path: str = "") -> str:
    """`path` as the server saw it, without the `root_path` prefix the app runs under."""
    root = root_path.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :]  # under a prefix the app's routes match the rest
    return path


def is_protected(path: str, root_path: str = "") -> bool:
    """Whether `path` (as the server saw it, with any `root_path` prefix) needs a token."""
    path = app_path(path, root_path)
    return path == METRICS_PATH or (path.startswith("/api/") and path not in OPEN_PATHS)


def needed_role(method: str, path: str, root_path: str = "") -> str:
    """The least role that may call a protected path: `metrics` for the scrape endpoint,
    `read` to read the API, `submit` for anything else."""
    if app_path(path, root_path) == METRICS_PATH:
        return "metrics"
    return "read" if method in READ_METHODS else "submit"


def identify(session: Session, header: str | None) -> Principal:
    """The principal of an Authorization header; TokenError says why there is none."""
    if not header:
        raise TokenError("authentication required: send Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("malformed Authorization header: expected 'Bearer <token>'")
    return verify_token(session, token.strip())


PRINCIPAL_KEY = "hpo_principal"


class AuthGate:
    """Answers 401 before a request body is read: nobody without a valid token gets a
    multipart upload parsed or a JSON body decoded. Roles and owners are checked by
    `authenticate`, which reuses the principal found here; the route reuses the session
    (`get_session`), so an authenticated request is still one session of ours."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.on = auth_required(settings)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            not self.on
            or scope["type"] != "http"
            or not is_protected(scope["path"], scope.get("root_path", ""))
        ):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        session = get_sessionmaker(self.settings.database_url)()
        try:
            try:
                principal = await run_in_threadpool(self._look_up, session, header)
            except TokenError as e:
                response = JSONResponse(
                    {"detail": str(e)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
            state = scope.setdefault("state", {})
            state[PRINCIPAL_KEY] = principal
            state[GATE_SESSION_KEY] = session
            await self.app(scope, receive, send)
        finally:
            # No transaction is left open here (the lookup's and the route's have ended),
            # so closing does no I/O on the event loop.
            session.close()

    @staticmethod
    def _look_up(session: Session, header: str | None) -> Principal:
        # A transaction of its own: no connection is held while the request body is read.
        with session.begin():
            return identify(session, header)


def authenticate(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    session: SessionDep,
) -> Principal | None:
    """The caller's principal; None when auth is off or the path is open. Raises
    `TokenError` (401) without a valid token, `Forbidden` (403) for a role that may not do
    this. Owners are checked by the routes' path dependencies (`ownership.py`)."""
    if not request.app.state.auth_required or not is_protected(
        request.url.path, request.scope.get("root_path", "")
    ):
        return None
    principal: Principal | None = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if principal is None:  # the app runs without AuthGate in front of it
        principal = identify(session, request.headers.get("authorization"))
    needed = needed_role(request.method, request.url.path, request.scope.get("root_path", ""))
    if not principal.has(needed):
        raise Forbidden(f"token {principal.name!r} has role {principal.role}; needs {needed}")
    return principal


PrincipalDep = Annotated[Principal | None, Depends(authenticate)]


def owner_id(principal: Principal | None) -> int | None:
    """The token id to record as the owner of what this caller creates (None: auth off)."""
    return None if principal is None else principal.token_id


def require_owner(principal: Principal | None, owner_token_id: int | None, what: str) -> None:
    """Raises `Forbidden` unless the caller owns `what` (or is an admin, or auth is off)."""
    if principal is not None and not principal.owns(owner_token_id):
        raise Forbidden(f"{what} belongs to another token than {principal.name!r}")
