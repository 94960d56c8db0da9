"""The writes that move a job through its life, each one idempotent.

A state change is a compare-and-set UPDATE (`WHERE state IN (...)`): when two
deliveries of the same task race, exactly one changes the row and the other sees
rowcount 0. Results and expert results are inserts that ignore or merge conflicts
on their unique keys, so a redelivered task never writes twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal, select, update
from sqlalchemy.orm import Session

from tierflow.routing.analysis import Analysis
from tierflow.routing.states import JobState, Tier, sources_of
from tierflow.routing.verdict import Verdict, VerdictAction
from tierflow.store.db import ignoring_insert, insert_ignore, insert_stmt
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
    parent_id: str | None = None  # a decomposed job's child names its parent


@dataclass(frozen=True)
class AttemptView:
    job_id: str
    number: int
    tier: str
    state: str
    decision: dict[str, Any]


# The hot path reads columns of the tables, not ORM entities (no identity map, no ORM compile
# step), through statements built once here, their values bound at execution.
_JOB_VIEW = select(
    JOBS.c.id, JOBS.c.kind, JOBS.c.payload, JOBS.c.metadata, JOBS.c.state, JOBS.c.tier,
    JOBS.c.attempt, JOBS.c.analysis, JOBS.c.parent_id,
).where(JOBS.c.id == bindparam("b_id"))  # fmt: skip
_ATTEMPT_VIEW = select(
    ATTEMPTS.c.job_id, ATTEMPTS.c.number, ATTEMPTS.c.tier, ATTEMPTS.c.state, ATTEMPTS.c.decision
).where(ATTEMPTS.c.job_id == bindparam("b_job_id"), ATTEMPTS.c.number == bindparam("b_number"))
# the analysis of another job with the same content (the job's own content_hash, correlated)
_same = JOBS.alias("same_content")
_CACHED = (
    select(_same.c.analysis)
    .where(
        _same.c.content_hash == JOBS.c.content_hash, _same.c.id != JOBS.c.id, _same.c.analysis.is_not(None)
    )
    .limit(1)
    .scalar_subquery()
)
_JOB_VIEW_CACHED = _JOB_VIEW.add_columns(_CACHED)
_JOB_ATTEMPT_VIEW = (
    select(*_JOB_VIEW.selected_columns, *_ATTEMPT_VIEW.selected_columns)
    .select_from(
        JOBS.outerjoin(
            ATTEMPTS, (ATTEMPTS.c.job_id == JOBS.c.id) & (ATTEMPTS.c.number == bindparam("b_number"))
        )
    )
    .where(JOBS.c.id == bindparam("b_id"))
)


def load_job(session: Session, job_id: str) -> JobView | None:
    row = session.execute(_JOB_VIEW, {"b_id": job_id}).first()
    return None if row is None else _job_view(row)


def load_queued_job(session: Session, job_id: str) -> tuple[JobView | None, Analysis | None]:
    """The job, and the analysis of another job with the same content if one was made (it costs
    nothing again), in one round trip."""
    row = session.execute(_JOB_VIEW_CACHED, {"b_id": job_id}).first()
    if row is None:
        return None, None
    cached = row[-1]
    analysis = (
        None if cached is None else Analysis.from_dict({k: v for k, v in cached.items() if k != "cached"})
    )
    return _job_view(row), analysis


def load_attempt(session: Session, job_id: str, number: int) -> AttemptView | None:
    row = session.execute(_ATTEMPT_VIEW, {"b_job_id": job_id, "b_number": number}).first()
    return None if row is None else AttemptView(*row)


def load_job_attempt(session: Session, job_id: str, number: int) -> tuple[JobView | None, AttemptView | None]:
    """The job and its attempt `number` (each None when absent), in one round trip."""
    row = session.execute(_JOB_ATTEMPT_VIEW, {"b_id": job_id, "b_number": number}).first()
    if row is None:
        return None, None
    attempt = row[len(_JOB_VIEW.selected_columns) :]
    return _job_view(row), None if attempt[0] is None else AttemptView(*attempt)


def _job_view(row: Any) -> JobView:
    id_, kind, payload, metadata, state, tier, attempt, analysis, parent_id = row[:9]
    return JobView(id_, kind, payload, metadata, JobState(state), tier, attempt, analysis, parent_id)


def move_job(
    session: Session,
    job_id: str,
    target: JobState,
    stale_in: timedelta | None = None,
    through: JobState | None = None,
    **fields: Any,
) -> bool:
    """Move the job to `target` if the state machine allows it from where it is now; `through`:
    by way of that state in the same statement (from where `through` may be entered), as two
    moves in one transaction would, one round trip fewer."""
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
    if through is not None and through not in sources_of(target):
        raise ValueError(f"a job does not move from {through.value} to {target.value}")
    result = session.execute(_move(through or target), values | {"b_id": job_id})
    return bool(result.rowcount)  # type: ignore[attr-defined]


@cache
def _move(entered: JobState) -> Any:
    """The compare-and-set UPDATE of a job that may enter `entered` from where it is; its SET
    clause is the columns the execution binds."""
    allowed = sorted(state.value for state in sources_of(entered))
    return update(JOBS).where(JOBS.c.id == bindparam("b_id"), _one_of(JOBS.c.state, allowed))


def _one_of(column: Any, values: list[str]) -> Any:
    """`column IN (...)` with the values bound in the statement itself: a list given to `in_()`
    is an expanding parameter, its IN list rendered again at every execution."""
    return column.in_([literal(value, column.type) for value in values])


_TOUCH = update(JOBS).where(JOBS.c.id == bindparam("b_id"))


def touch_job(session: Session, job_id: str, stale_in: timedelta) -> None:
    """Push the job's stale deadline forward: it is moving."""
    now = utcnow()
    session.execute(
        _TOUCH, {"b_id": job_id, "updated_at": now, "sent_at": now, "stale_after": now + stale_in}
    )


def create_attempt(
    session: Session,
    job_id: str,
    number: int,
    tier: str,
    decision: dict[str, Any],
    queue: str | None = None,
) -> None:
    """The attempt, dispatched; with `queue`, created running there (its chord is sent after the
    commit), as create then start would leave it."""
    row: dict[str, Any] = {"job_id": job_id, "number": number, "tier": tier, "decision": decision}
    if queue is None:
        row["state"] = "dispatched"
    else:
        row.update(state="running", started_at=utcnow(), queue=queue)
    insert_ignore(session, Attempt, row, ["job_id", "number"])


_OPEN_ATTEMPT = (
    ATTEMPTS.c.job_id == bindparam("b_job_id"),
    ATTEMPTS.c.number == bindparam("b_number"),
    _one_of(ATTEMPTS.c.state, ["dispatched", "running"]),
)
_START = update(ATTEMPTS).where(*_OPEN_ATTEMPT)
_CLAIM = (
    update(ATTEMPTS)
    .where(*_OPEN_ATTEMPT)
    .values(
        state="judged",
        finished_at=bindparam("b_now"),
        worker=func.coalesce(ATTEMPTS.c.worker, bindparam("b_worker", type_=ATTEMPTS.c.worker.type)),
    )
)
_VERDICT = update(ATTEMPTS).where(
    ATTEMPTS.c.job_id == bindparam("b_job_id"), ATTEMPTS.c.number == bindparam("b_number")
)


def start_attempt(session: Session, job_id: str, number: int, queue: str | None, worker: str | None) -> bool:
    """Mark the attempt running on `queue` by `worker`; False when it was already judged."""
    params = {"b_job_id": job_id, "b_number": number}
    values = {"state": "running", "started_at": utcnow(), "queue": queue, "worker": worker}
    result = session.execute(_START, params | values)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def claim_attempt(session: Session, job_id: str, number: int, worker: str | None = None) -> bool:
    """Take the right to judge the attempt; exactly one caller ever gets True. An attempt that
    an escalation fanned out names no worker yet: the judging worker, on the tier's queue, is it."""
    params = {"b_job_id": job_id, "b_number": number, "b_now": utcnow(), "b_worker": worker}
    result = session.execute(_CLAIM, params)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_verdict(
    session: Session, job_id: str, number: int, verdict: str, quality: float, reasons: list[str]
) -> None:
    values = {"verdict": verdict, "quality": quality, "reasons": {"reasons": reasons}}
    session.execute(_VERDICT, {"b_job_id": job_id, "b_number": number} | values)


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
    # executemany of one statement built once (SQLAlchemy sends it as one multi-row INSERT); a
    # statement with the rows' VALUES written in would be compiled again for every attempt
    stmt = ignoring_insert(session, ExpertResult, ("job_id", "attempt", "expert"))
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
    session.execute(_TOUCH, {"b_id": job_id, "sent_at": utcnow()})


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
