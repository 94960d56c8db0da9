"""The writes that move a job through its life, each one idempotent.

A state change is a compare-and-set UPDATE (`WHERE state IN (...)`): when two
deliveries of the same task race, exactly one changes the row and the other sees
rowcount 0. Results and expert results are inserts that ignore or merge conflicts
on their unique keys, so a redelivered task never writes twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from tierflow.routing.analysis import Analysis
from tierflow.routing.states import JobState, Tier, sources_of
from tierflow.routing.verdict import Verdict, VerdictAction
from tierflow.store.db import insert_for, insert_ignore, insert_stmt
from tierflow.store.models import Attempt, ExpertResult, Feedback, Job, Result, utcnow

# The state changes are Core UPDATEs of the tables, their criteria on the tables' columns: an
# ORM-enabled UPDATE (an entity or its attributes anywhere in it) would also search the session
# for loaded objects to synchronise, work that a compare-and-set on one row never needs.
JOBS = cast(Table, Job.__table__)
ATTEMPTS = cast(Table, Attempt.__table__)


@dataclass(frozen=True)
class JobView:
    id: str
    kind: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    state: JobState
    tier: str | None
    attempt: int
    analysis: dict[str, Any] | None


@dataclass(frozen=True)
class AttemptView:
    job_id: str
    number: int
    tier: str
    state: str
    decision: dict[str, Any]


# The hot path reads columns, not ORM objects: no identity map, no instrumented instances.
_JOB_VIEW = (Job.id, Job.kind, Job.payload, Job.meta, Job.state, Job.tier, Job.attempt, Job.analysis)
_ATTEMPT_VIEW = (Attempt.job_id, Attempt.number, Attempt.tier, Attempt.state, Attempt.decision)


def load_job(session: Session, job_id: str) -> JobView | None:
    row = session.execute(select(*_JOB_VIEW).where(Job.id == job_id)).first()
    if row is None:
        return None
    return JobView(
        row.id, row.kind, row.payload, row.meta, JobState(row.state), row.tier, row.attempt, row.analysis
    )


def cached_analysis(session: Session, job_id: str) -> Analysis | None:
    """The analysis of another job with the same content, if one was made: it costs nothing again."""
    same_content = select(Job.content_hash).where(Job.id == job_id).scalar_subquery()
    row = session.execute(
        select(Job.analysis)
        .where(Job.content_hash == same_content, Job.id != job_id, Job.analysis.is_not(None))
        .limit(1)
    ).scalar_one_or_none()
    if row is None:
        return None
    return Analysis.from_dict({k: v for k, v in row.items() if k != "cached"})


def load_attempt(session: Session, job_id: str, number: int) -> AttemptView | None:
    row = session.execute(
        select(*_ATTEMPT_VIEW).where(Attempt.job_id == job_id, Attempt.number == number)
    ).first()
    if row is None:
        return None
    return AttemptView(row.job_id, row.number, row.tier, row.state, row.decision)


def move_job(
    session: Session, job_id: str, target: JobState, stale_in: timedelta | None = None, **fields: Any
) -> bool:
    """Move the job to `target` if the state machine allows it from where it is now."""
    now = utcnow()
    # A move is followed by the message of the next stage: the job waits on it from now.
    values: dict[str, Any] = {
        "state": target.value,
        "updated_at": now,
        "sent_at": now,
        "stalled_resends": 0,
        **fields,
    }
    if stale_in is not None:
        values["stale_after"] = now + stale_in
    if target.terminal:
        values["finished_at"] = now
    allowed = [state.value for state in sources_of(target)]
    result = session.execute(
        update(JOBS).where(JOBS.c.id == job_id, JOBS.c.state.in_(allowed)).values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def touch_job(session: Session, job_id: str, stale_in: timedelta) -> None:
    """Push the job's stale deadline forward: it is moving."""
    now = utcnow()
    session.execute(
        update(JOBS)
        .where(JOBS.c.id == job_id)
        .values(updated_at=now, sent_at=now, stale_after=now + stale_in)
    )


def create_attempt(session: Session, job_id: str, number: int, tier: str, decision: dict[str, Any]) -> None:
    insert_ignore(
        session,
        Attempt,
        {"job_id": job_id, "number": number, "tier": tier, "state": "dispatched", "decision": decision},
        ["job_id", "number"],
    )


def start_attempt(session: Session, job_id: str, number: int, queue: str | None, worker: str | None) -> bool:
    """Mark the attempt running on `queue` by `worker`; False when it was already judged."""
    result = session.execute(
        update(ATTEMPTS)
        .where(
            ATTEMPTS.c.job_id == job_id,
            ATTEMPTS.c.number == number,
            ATTEMPTS.c.state.in_(["dispatched", "running"]),
        )
        .values(state="running", started_at=utcnow(), queue=queue, worker=worker)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def claim_attempt(session: Session, job_id: str, number: int, worker: str | None = None) -> bool:
    """Take the right to judge the attempt; exactly one caller ever gets True. An attempt that
    an escalation fanned out names no worker yet: the judging worker, on the tier's queue, is it."""
    result = session.execute(
        update(ATTEMPTS)
        .where(
            ATTEMPTS.c.job_id == job_id,
            ATTEMPTS.c.number == number,
            ATTEMPTS.c.state.in_(["dispatched", "running"]),
        )
        .values(state="judged", finished_at=utcnow(), worker=func.coalesce(ATTEMPTS.c.worker, worker))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_verdict(
    session: Session, job_id: str, number: int, verdict: str, quality: float, reasons: list[str]
) -> None:
    session.execute(
        update(ATTEMPTS)
        .where(ATTEMPTS.c.job_id == job_id, ATTEMPTS.c.number == number)
        .values(verdict=verdict, quality=quality, reasons={"reasons": reasons})
    )


def upsert_expert_result(session: Session, row: dict[str, Any]) -> None:
    """Insert the expert's result; a success replaces an earlier failure, never another success."""
    stmt = insert_stmt(session, ExpertResult, row)
    columns = {k: stmt.excluded[k] for k in row if k not in ("job_id", "attempt", "expert")}
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "attempt", "expert"],
        set_=columns,
        where=ExpertResult.__table__.c.error.is_not(None),
    )
    session.execute(stmt)


def write_expert_results(session: Session, rows: list[dict[str, Any]]) -> None:
    """An attempt's expert rows, as its chord returned them, in one statement; a row already
    stored for the same expert (written by an earlier release's expert task) is kept."""
    if not rows:
        return
    # executemany of one cached statement (SQLAlchemy sends it as one multi-row INSERT); a
    # statement with the rows' VALUES written in would be compiled again for every attempt
    stmt = insert_for(session, ExpertResult).on_conflict_do_nothing(
        index_elements=["job_id", "attempt", "expert"]
    )
    session.execute(stmt, [EXPERT_ROW | row for row in rows])


# One multi-row INSERT needs every row to name the same columns: what an expert leaves out.
EXPERT_ROW: dict[str, Any] = {
    "provider": None,
    "model": None,
    "output": None,
    "confidence": None,
    "cost_usd": 0.0,
    "input_tokens": 0,
    "output_tokens": 0,
    "latency_s": 0.0,
    "error": None,
    "calls": [],
}


def callback_sent(session: Session, job_id: str) -> None:
    """The attempt's chord has sent its callback: the job waits on that message from now."""
    session.execute(update(JOBS).where(JOBS.c.id == job_id).values(sent_at=utcnow()))


def last_expert_error(session: Session, job_id: str) -> str | None:
    """The newest error an expert of this job recorded, if any."""
    return session.execute(
        select(ExpertResult.error)
        .where(ExpertResult.job_id == job_id, ExpertResult.error.is_not(None))
        .order_by(ExpertResult.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def expert_results(session: Session, job_id: str, attempt: int) -> list[ExpertResult]:
    return list(
        session.execute(
            select(ExpertResult).where(ExpertResult.job_id == job_id, ExpertResult.attempt == attempt)
        ).scalars()
    )


def write_result(session: Session, row: dict[str, Any]) -> bool:
    """The job's one result; False if it already has one."""
    return insert_ignore(session, Result, row, ["job_id"]) == 1


def write_feedback(session: Session, row: dict[str, Any]) -> None:
    insert_ignore(session, Feedback, row, ["dedupe_key"])


# Where a judged attempt that does not go on leaves its job.
FINAL_STATE = {
    VerdictAction.ACCEPT: JobState.SUCCEEDED,
    VerdictAction.NEEDS_REVIEW: JobState.NEEDS_REVIEW,
    VerdictAction.FAIL: JobState.FAILED,
}


def conclude(session: Session, job_id: str, attempt: int, tier: Tier, verdict: Verdict) -> None:
    """End the job with the attempt's verdict: its final state, and its one result."""
    state = FINAL_STATE[verdict.action]
    move_job(session, job_id, state, error="; ".join(verdict.reasons) if state is JobState.FAILED else None)
    write_result(
        session,
        {
            "job_id": job_id,
            "attempt": attempt,
            "tier": tier.value,
            "verdict": verdict.action.value,
            "quality": verdict.quality,
            "output": verdict.output,
        },
    )
