"""HTTP API keys per tenant: created once, kept only as SHA-256 hashes, revoked, looked up.

A key is 32 random bytes, so a single SHA-256 is enough to keep it from being read back
(there is no low-entropy secret to stretch, as there would be with a password).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tierflow.routing.errors import InputError
from tierflow.store.models import ApiKey, utcnow

KEY_PREFIX = "tf-"
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class KeyInfo:
    id: str
    tenant: str
    hint: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, tenant: str) -> tuple[KeyInfo, str]:
    """A new key for `tenant`: its record, and the secret (shown once, never stored)."""
    if not TENANT.match(tenant):
        raise InputError("tierflow keys create", 0, "tenant", "letters, digits, - and _, up to 64")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=f"key_{secrets.token_hex(6)}",
        tenant=tenant,
        key_hash=hash_key(secret),
        hint=secret[:7] + "...",
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return _info(row), secret


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.tenant, row.hint, row.created_at, row.revoked_at)


def list_keys(session: Session) -> list[KeyInfo]:
    return [_info(row) for row in session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars()]


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key by id; False when there is no such active key."""
    result = session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def any_key(session: Session) -> bool:
    """Whether a key was ever created (revoked ones count: revoking the last key opens nothing)."""
    return session.execute(select(ApiKey.id).limit(1)).first() is not None


def any_active_key(session: Session) -> bool:
    return session.execute(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)).first() is not None


def tenant_of(session: Session, secret: str) -> str | None:
    """The tenant of an active key, or None for a key that is unknown or revoked."""
    return session.execute(
        select(ApiKey.tenant).where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()
