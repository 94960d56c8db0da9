"""A decomposed job and its children: created together, joined when the last child ends.

The join is the store's, not a broker's: the transaction that ends a child locks its
parent's row, so of two siblings ending at once the second waits and then sees the first
ended; exactly one of them finds every child ended and merges. A parent left waiting
with every child ended (a child ended by a person, a crash between commits) is found by
the reconciler's sweep (`ready_parents`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from tierflow.routing.decompose import ChildEnd
from tierflow.routing.states import JobState
from tierflow.store.db import insert_ignore
from tierflow.store.models import Attempt, ExpertResult, Job, Result

# A child's id is its parent's and its part's number, after a separator no submitted id has.
CHILD_SEPARATOR = "~"
_NON_TERMINAL = [s.value for s in JobState if not s.terminal]


def child_id(parent_id: str, part: int) -> str:
    base = parent_id if len(parent_id) <= 120 else hashlib.sha256(parent_id.encode()).hexdigest()[:32]
    return f"{base}{CHILD_SEPARATOR}{part + 1}"


def create_children(
    session: Session, parent_id: str, rows: Sequence[dict[str, Any]], stale_after: datetime
) -> list[str]:
    """Insert the parent's children (id, kind, payload, metadata, content_hash each), queued, in
    the parent's batch; return their ids. A second delivery inserts nothing."""
    batch_id = session.execute(select(Job.batch_id).where(Job.id == parent_id)).scalar_one()
    full = [
        {
            **row,
            "batch_id": batch_id,
            "parent_id": parent_id,
            "state": JobState.QUEUED.value,
            "attempt": 0,
            "redeliveries": 0,
            "stale_after": stale_after,
        }
        for row in rows
    ]
    insert_ignore(session, Job, full, ["id"])
    return [row["id"] for row in rows]


def family_spent(session: Session, root: str) -> float:
    """What a parent and all its children have spent together."""
    members = select(Job.id).where((Job.id == root) | (Job.parent_id == root))
    total = session.execute(select(func.sum(ExpertResult.cost_usd)).where(ExpertResult.job_id.in_(members)))
    return float(total.scalar_one() or 0.0)


def _open_child(parent: Any) -> Any:
    child = aliased(Job)
    return exists().where(child.parent_id == parent.id, child.state.in_(_NON_TERMINAL))


def parent_if_ready(session: Session, parent_id: str) -> bool:
    """Whether the parent waits and every child of it has now ended; the parent's row stays
    locked to the end of the transaction, so no sibling can find it ready too."""
    state = session.execute(
        select(Job.state).where(Job.id == parent_id).with_for_update()
    ).scalar_one_or_none()
    if state != JobState.DECOMPOSED.value:
        return False
    child = aliased(Job)
    still_open = session.execute(
        select(func.count()).where(child.parent_id == parent_id, child.state.in_(_NON_TERMINAL))
    ).scalar_one()
    return still_open == 0


def ready_parents(session: Session, limit: int) -> list[str]:
    """Waiting parents none of whose children is still open, locked (skipping locked ones)."""
    return list(
        session.execute(
            select(Job.id)
            .where(Job.state == JobState.DECOMPOSED.value, ~_open_child(Job))
            .order_by(Job.sent_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )


def ended_children(session: Session, parent_id: str) -> list[ChildEnd]:
    """The parent's children as the merge reads them: state, the deciding attempt's specialist and
    tier, and the result."""
    rows = session.execute(
        select(Job.id, Job.state, Job.meta, Job.tier, Result.quality, Result.output, Attempt.decision)
        .outerjoin(Result, Result.job_id == Job.id)
        .outerjoin(Attempt, and_(Attempt.job_id == Job.id, Attempt.number == Result.attempt))
        .where(Job.parent_id == parent_id)
    ).all()
    return [
        ChildEnd(
            job_id=row.id,
            part=int((row.meta or {}).get("part", 0)),
            state=row.state,
            specialist=(row.decision or {}).get("specialist"),
            tier=row.tier,
            quality=float(row.quality or 0.0),
            output=row.output,
        )
        for row in rows
    ]
