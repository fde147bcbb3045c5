"""API schemas of tokens (`/api/tokens`, admins only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.core.types import ShortName, Strict, UtcDatetime

Role = Literal["metrics", "read", "submit", "admin"]  # service.access.tokens.ROLES


class TokenRequest(Strict):
    """A token to create: who or what uses it, and its role."""

    name: ShortName
    role: Role


class RevokeRequest(Strict):
    """A token to revoke: its id (digits), or a name (every active token of it)."""

    ref: str = Field(min_length=1, max_length=100)


class TokenOut(BaseModel):
    """A token without its secret (only its sha256 is stored)."""

    id: int
    name: str
    role: str
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None


class TokenCreated(TokenOut):
    """A new token with its secret, shown this once."""

    token: str = Field(description="the bearer token; only its hash is stored")
