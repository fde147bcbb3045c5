"""HPO_BOOTSTRAP_TOKEN_FILE: an admin token from a file (a compose secret), stored at startup,
once, never logged. (tests/test_wheel.py serves with one from an installed wheel.)"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from service.access.bootstrap import BOOTSTRAP_NAME, ensure_bootstrap_token
from service.access.tokens import hash_token, revoke_tokens, verify_token
from service.app.auth import check_at_startup
from service.core.db.engine import session_scope
from service.core.db.models import ApiToken
from service.core.settings import Settings


def new_token() -> str:
    return "hpo_" + secrets.token_urlsafe(32)


def bootstrap_rows(url: str, token: str) -> int:
    with session_scope(url) as session:
        rows = session.scalars(
            select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))
        ).all()
        return len(rows)


def test_a_public_service_starts_with_the_token_of_the_file(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = new_token()
    path = tmp_path / "admin_token"
    path.write_text(token + "\n")
    settings = Settings(database_url=database_url, host="0.0.0.0", bootstrap_token_file=path)
    with caplog.at_level(logging.DEBUG):
        check_at_startup(settings)  # auth on: would refuse to start without a token
        check_at_startup(settings)  # a restart stores nothing twice
    assert bootstrap_rows(database_url, token) == 1
    with session_scope(database_url) as session:
        principal = verify_token(session, token)
    assert (principal.name, principal.role) == (BOOTSTRAP_NAME, "admin")
    assert token not in caplog.text
    assert token[4:] not in caplog.text


def test_a_revoked_bootstrap_token_stays_revoked(database_url: str) -> None:
    token = new_token()
    with session_scope(database_url) as session:
        assert ensure_bootstrap_token(session, token)
        row_id = session.scalar(select(ApiToken.id).order_by(ApiToken.id.desc()).limit(1))
    with session_scope(database_url) as session:
        revoke_tokens(session, str(row_id))
    with session_scope(database_url) as session:
        assert not ensure_bootstrap_token(session, token)
    with session_scope(database_url) as session, pytest.raises(Exception, match="revoked"):
        verify_token(session, token)


@pytest.mark.parametrize("content", ["", "hunter2-not-a-token", "hpo_short"])
def test_a_bad_file_stops_the_service_without_echoing_it(
    database_url: str, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "admin_token"
    path.write_text(content)
    settings = Settings(database_url=database_url, host="0.0.0.0", bootstrap_token_file=path)
    with pytest.raises(SystemExit) as raised:
        check_at_startup(settings)
    message = str(raised.value.code)
    assert str(path) in message
    assert not content or content not in message


def test_a_missing_file_stops_the_service(database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=database_url, host="0.0.0.0", bootstrap_token_file=tmp_path / "nope"
    )
    with pytest.raises(SystemExit, match="cannot read the bootstrap token file"):
        check_at_startup(settings)
