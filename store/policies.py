"""Policy versions in the store: the active one, and the first one seeded from settings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from tierflow.routing.errors import InputError
from tierflow.routing.policy import Policy
from tierflow.store.db import insert_ignore
from tierflow.store.models import PolicyVersion

PUBLISH_LOCK = 0x7469_6572  # any fixed number: the advisory lock of policy publishing


def active_policy(session: Session) -> Policy | None:
    row = session.execute(
        select(PolicyVersion)
        .where(PolicyVersion.active.is_(True))
        .order_by(PolicyVersion.version.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if row is None else Policy.model_validate(row.body)


def seed_policy(session: Session, policy: Policy) -> Policy:
    """Store `policy` as version 1 unless a version 1 exists; return what is active."""
    insert_ignore(
        session,
        PolicyVersion,
        {
            "version": 1,
            "parent": None,
            "body": policy.model_dump(mode="json"),
            "reason": "initial policy from settings",
            "active": True,
        },
        ["version"],
    )
    return active_policy(session) or policy


def publish_policy(
    session: Session,
    policy: Policy,
    reason: str,
    statistics: dict[str, Any] | None = None,
    reflection: str | None = None,
) -> Policy:
    """Store `policy` as the next version, make it the active one, and return it with its number.

    The parent is the version active until now. Publishers are serialised (a transaction-scoped
    advisory lock on PostgreSQL) so two reflect runs cannot both take the same number.
    """
    lock_publishing(session)
    current = session.execute(select(func.max(PolicyVersion.version))).scalar_one()
    parent = (
        session.execute(
            select(PolicyVersion.version)
            .where(PolicyVersion.active.is_(True))
            .order_by(PolicyVersion.version.desc())
        )
        .scalars()
        .first()
    )
    version = (current or 0) + 1
    published = policy.model_copy(update={"version": version})
    session.execute(update(PolicyVersion).values(active=False))
    session.add(
        PolicyVersion(
            version=version,
            parent=parent if parent is not None else current,
            body=published.model_dump(mode="json"),
            reason=reason,
            active=True,
            statistics=statistics,
            reflection=reflection,
        )
    )
    session.flush()
    return published


def lock_publishing(session: Session) -> None:
    """Hold the policy publishing lock until the transaction ends (PostgreSQL; SQLite locks the file)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PUBLISH_LOCK})


def active_version(session: Session) -> PolicyVersion | None:
    return session.execute(
        select(PolicyVersion)
        .where(PolicyVersion.active.is_(True))
        .order_by(PolicyVersion.version.desc())
        .limit(1)
    ).scalar_one_or_none()


def policy_history(session: Session) -> list[PolicyVersion]:
    return list(session.execute(select(PolicyVersion).order_by(PolicyVersion.version)).scalars())


def policy_version(session: Session, version: int) -> PolicyVersion:
    row = session.get(PolicyVersion, version)
    if row is None:
        raise InputError("tierflow policy", 0, "version", f"no policy version {version}")
    return row


def rollback_policy(
    session: Session, version: int, why: str | None = None, statistics: dict[str, Any] | None = None
) -> Policy:
    """Publish the body of an earlier version as a new version: history only grows."""
    body = policy_version(session, version).body
    return publish_policy(
        session, Policy.model_validate(body), f"rollback to version {version}", statistics, why
    )
