"""API tokens: created and revoked through the database (`hpo token ...`), checked by the API.

A token is `hpo_` + 43 URL-safe characters (256 random bits). Only its sha256 is stored: a
stolen database does not give working tokens, and 256 bits of entropy need no slow hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.core.db.models import ApiToken, utcnow
from service.core.errors import TokenError as TokenError  # re-exported for callers here

# Each role includes the ones before it: `metrics` may scrape /metrics only, `read` also
# reads the API, `submit` also creates and changes what it owns, `admin` changes anything.
ROLES = ("metrics", "read", "submit", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
TOKEN_RE = re.compile(r"^hpo_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """Who makes a request: the token's id, name and role."""

    token_id: int
    name: str
    role: str

    def has(self, role: str) -> bool:
        """Whether this principal's role includes `role` (see `ROLES`)."""
        return RANK[self.role] >= RANK[role]

    def owns(self, owner_token_id: int | None) -> bool:
        """Admins own everything; a record made with auth off belongs to admins only."""
        return self.role == "admin" or owner_token_id == self.token_id


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(t: ApiToken) -> TokenInfo:
    return TokenInfo(t.id, t.name, t.role, t.created_at, t.revoked_at)


def create_token(session: Session, name: str, role: str) -> tuple[TokenInfo, str]:
    """A new token, flushed for the caller to commit; the plain text is returned here and
    nowhere else. Raises TokenError for an unknown role or a bad name."""
    if role not in ROLES:
        raise TokenError(f"role must be one of {list(ROLES)}, got {role!r}")
    if not name or len(name) > 100:
        raise TokenError("name must be 1 to 100 characters")
    token = "hpo_" + secrets.token_urlsafe(32)
    row = ApiToken(name=name, role=role, token_sha256=hash_token(token), created_at=utcnow())
    session.add(row)
    session.flush()
    return _info(row), token


def list_tokens(session: Session) -> list[TokenInfo]:
    """Every token, revoked ones included, in creation order."""
    return [_info(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.id))]


def revoke_tokens(session: Session, ref: str) -> list[TokenInfo]:
    """Revoke a token by id, or every active token of a name; returns what was revoked.
    Raises TokenError when no active token matches."""
    where = ApiToken.id == int(ref) if ref.isdigit() else ApiToken.name == ref
    rows = session.scalars(select(ApiToken).where(where, ApiToken.revoked_at.is_(None))).all()
    if not rows:
        raise TokenError(f"no active token {ref!r}")
    session.execute(
        update(ApiToken).where(ApiToken.id.in_([r.id for r in rows])).values(revoked_at=utcnow())
    )
    return [_info(r) for r in rows]


def active_token_count(session: Session) -> int:
    """How many tokens are not revoked."""
    count = session.scalar(
        select(func.count()).select_from(ApiToken).where(ApiToken.revoked_at.is_(None))
    )
    return int(count or 0)


def verify_token(session: Session, token: str) -> Principal:
    """The principal of a well-formed token; TokenError says why it is refused."""
    if not TOKEN_RE.match(token):
        raise TokenError("malformed token")
    digest = hash_token(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
    # The lookup is by the hash of a 256-bit secret; the constant-time comparison keeps the
    # final check free of timing differences all the same.
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        raise TokenError("unknown token")
    if row.revoked_at is not None:
        raise TokenError("revoked token")
    return Principal(token_id=row.id, name=row.name, role=row.role)
