"""Worker heartbeats and the reconciler's view of unfinished jobs (routing/recovery.py decides)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, false, or_, select, true, update
from sqlalchemy.orm import Session

from tierflow.routing.recovery import REORDER_MARGIN_S, ClusterView, Unfinished
from tierflow.routing.states import JobState
from tierflow.store.db import insert_stmt
from tierflow.store.models import Job, WorkerBeat, utcnow

CLASSIFY_QUEUE = "classify"  # worker.app names the queues; store must not import it

# Beats older than this are only evidence of what queues once handed out; then they go.
FORGET_BEATS_AFTER = timedelta(days=1)


def record_beat(
    session: Session, worker: str, lease_s: float, holding: list[str], received: dict[str, float]
) -> None:
    """Upsert the worker's beat: it holds `holding` for another `lease_s` seconds."""
    now = utcnow()
    row = {
        "worker": worker,
        "beat_at": now,
        "lease_until": now + timedelta(seconds=lease_s),
        "holding": holding,
        "received": received,
    }
    stmt = insert_stmt(session, WorkerBeat, row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["worker"], set_={k: stmt.excluded[k] for k in row if k != "worker"}
    )
    session.execute(stmt)


def end_beat(session: Session, worker: str) -> None:
    """A worker that stops cleanly gives its leases up at once."""
    session.execute(update(WorkerBeat).where(WorkerBeat.worker == worker).values(lease_until=utcnow()))


def cluster_view(session: Session, now: datetime, queue_lengths: dict[str, int]) -> ClusterView:
    session.execute(delete(WorkerBeat).where(WorkerBeat.beat_at < now - FORGET_BEATS_AFTER))
    held: set[str] = set()
    newest: dict[str, float] = {}
    for beat in session.execute(select(WorkerBeat)).scalars():
        if _aware(beat.lease_until) > now:
            held.update(beat.holding)
        for queue, sent in beat.received.items():
            newest[queue] = max(newest.get(queue, 0.0), float(sent))
    return ClusterView(now.timestamp(), frozenset(held), newest, queue_lengths)


def unfinished_jobs(session: Session, view: ClusterView, quiet_s: float, limit: int) -> list[Job]:
    """The non-terminal jobs `recovery_for` should look at, oldest message first: past their stage
    timeout; or not held, in a queue that has handed out a younger message; or not held, quiet for
    `quiet_s`, in a queue that is empty. Locked, so two reconcilers never send a job twice."""
    now = datetime.fromtimestamp(view.now, UTC)
    quiet = now - timedelta(seconds=quiet_s)
    lost: list[Any] = [
        and_(in_queue(queue), Job.sent_at < datetime.fromtimestamp(newest - REORDER_MARGIN_S, UTC))
        for queue, newest in view.newest_received.items()
    ]
    lost += [and_(in_queue(q), Job.sent_at < quiet) for q, n in view.queue_lengths.items() if n == 0]
    not_held = Job.id.not_in(sorted(view.held)) if view.held else true()
    # a decomposed parent waits on its children, not on a message (tasks/families.py sweeps it)
    non_terminal = [s.value for s in JobState if not s.terminal and s is not JobState.DECOMPOSED]
    return list(
        session.execute(
            select(Job)
            .where(
                Job.state.in_(non_terminal), or_(Job.stale_after < now, and_(not_held, or_(false(), *lost)))
            )
            .order_by(Job.sent_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )


def in_queue(queue: str) -> Any:
    """The jobs whose next message goes to `queue`."""
    if queue == CLASSIFY_QUEUE:
        return or_(Job.state == JobState.QUEUED.value, Job.tier.is_(None))
    return and_(Job.state != JobState.QUEUED.value, Job.tier == queue.removeprefix("tier."))


def queue_of(job: Job) -> str:
    return CLASSIFY_QUEUE if job.state == JobState.QUEUED.value or job.tier is None else f"tier.{job.tier}"


def as_unfinished(job: Job) -> Unfinished:
    return Unfinished(
        job.id,
        queue_of(job),
        _aware(job.sent_at).timestamp(),
        _aware(job.stale_after).timestamp(),
        job.stalled_resends,
    )


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time here is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


def mark_sent(session: Session, job_id: str, **fields: Any) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(sent_at=utcnow(), **fields))


def mark_published(session: Session, job_ids: list[str]) -> None:
    """Queued jobs whose classify message has just been published wait on it from now."""
    session.execute(
        update(Job).where(Job.id.in_(job_ids), Job.state == JobState.QUEUED.value).values(sent_at=utcnow())
    )
