"""A first admin token from a file (`HPO_BOOTSTRAP_TOKEN_FILE`), for deployments where nobody
runs `hpo token create` before the service starts (a compose stack, a Kubernetes secret).

The file holds one token in the usual format (`hpo_` + 43 URL-safe characters), made by the
operator, e.g. ``python3 -c 'import secrets; print("hpo_" + secrets.token_urlsafe(32))'``.
At startup the service stores its sha256 as an admin token named `bootstrap` unless a token
with that hash exists already; a token that was revoked stays revoked. The token itself is
never logged: errors name the file, never its content.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.access.tokens import TOKEN_RE, hash_token
from service.core.db.models import ApiToken, utcnow
from service.core.errors import TokenError

log = logging.getLogger("hpo.auth")

BOOTSTRAP_NAME = "bootstrap"


def read_token_file(path: Path) -> str:
    """The token in `path` (surrounding whitespace ignored). Raises `TokenError` naming the
    file, never echoing its content, when it cannot be read or holds no well-formed token."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenError(f"cannot read the bootstrap token file {path}: {type(e).__name__}") from e
    if not TOKEN_RE.match(token):
        raise TokenError(
            f"the bootstrap token file {path} must hold one token: 'hpo_' followed by 43 "
            'URL-safe characters (python3 -c \'import secrets; print("hpo_" + '
            "secrets.token_urlsafe(32))')"
        )
    return token


def ensure_bootstrap_token(session: Session, token: str) -> bool:
    """Stores `token` (its sha256) as an admin token named `bootstrap` unless a token with
    that hash exists (active or revoked); True when it was added. Several service processes
    starting at once may race: the loser's insert hits the unique hash and is dropped."""
    digest = hash_token(token)
    existing = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
    if existing is not None:
        if existing.revoked_at is not None:
            log.warning("the bootstrap token (id %d) is revoked; not restoring it", existing.id)
        return False
    try:
        with session.begin_nested():
            session.add(
                ApiToken(
                    name=BOOTSTRAP_NAME, role="admin", token_sha256=digest, created_at=utcnow()
                )
            )
    except IntegrityError:
        return False  # another process stored it first
    log.info("stored the bootstrap admin token from HPO_BOOTSTRAP_TOKEN_FILE")
    return True
