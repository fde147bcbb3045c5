"""/api/tokens: API tokens over REST, for admins (with auth off there is no admin to ask:
`hpo token create` then works on the database itself)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends

from service.access import tokens as token_service
from service.access.schemas import RevokeRequest, TokenCreated, TokenOut, TokenRequest
from service.app.auth import PrincipalDep
from service.app.deps import SessionDep
from service.core.errors import Forbidden, NotFound, TokenError

MAX_ID = 2**31 - 1


def require_admin(principal: PrincipalDep) -> None:
    """`Forbidden` unless an admin token makes the request; with auth off, always. A
    dependency of every route here: it answers before a body is validated."""
    if principal is None:
        raise Forbidden(
            "tokens over the API need auth on and an admin token; with auth off "
            "use `hpo token create|list|revoke` on the database"
        )
    if principal.role != "admin":
        raise Forbidden(f"token {principal.name!r} has role {principal.role}; needs admin")


router = APIRouter(prefix="/api/tokens", tags=["tokens"], dependencies=[Depends(require_admin)])


@router.post("", status_code=201, response_model=TokenCreated)
def create_token(body: TokenRequest, session: SessionDep) -> TokenCreated:
    """Create a token; its secret is in this answer and nowhere else."""
    info, secret = token_service.create_token(session, body.name, body.role)
    return TokenCreated(**asdict(info), token=secret)


@router.get("", response_model=list[TokenOut])
def list_tokens(session: SessionDep) -> list[TokenOut]:
    """Every token, revoked ones too; never a secret."""
    return [TokenOut(**asdict(t)) for t in token_service.list_tokens(session)]


@router.post("/revoke", response_model=list[TokenOut])
def revoke_tokens(body: RevokeRequest, session: SessionDep) -> list[TokenOut]:
    """Revoke a token by id, or every active token of a name; 404 when none is active."""
    if body.ref.isdigit() and not (body.ref.isascii() and int(body.ref) <= MAX_ID):
        raise NotFound(f"no active token {body.ref!r}")  # no id of the INTEGER column
    try:
        revoked = token_service.revoke_tokens(session, body.ref)
    except TokenError as e:  # "no active token": a missing thing here, not a refused login
        raise NotFound(str(e)) from e
    return [TokenOut(**asdict(t)) for t in revoked]
