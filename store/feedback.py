"""Feedback from people and gold labels, and the review queue of jobs held for a person."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tierflow.routing.errors import InputError
from tierflow.routing.gold import matches_expected
from tierflow.routing.jsonl import strict_records
from tierflow.routing.states import JobState
from tierflow.store.db import insert_ignore
from tierflow.store.lifecycle import move_job
from tierflow.store.models import Attempt, Feedback, Job, Result


@dataclass(frozen=True)
class Label:
    line: int
    job_id: str
    correct: bool | None
    expected: Any
    note: str | None


def _last_attempt(session: Session, job_id: str) -> tuple[int | None, str | None]:
    row = session.execute(
        select(Attempt.number, Attempt.tier)
        .where(Attempt.job_id == job_id)
        .order_by(Attempt.number.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else (None, None)


def record_feedback(
    session: Session,
    job_id: str,
    source: str,
    correct: bool | None,
    score: float | None,
    note: str | None,
    key: str | None = None,
) -> None:
    """One outcome signal for the tier that gave the job's final answer."""
    if session.get(Job, job_id) is None:
        raise InputError("tierflow feedback", 0, "job", f"no job {job_id!r}")
    attempt, tier = _last_attempt(session, job_id)
    insert_ignore(
        session,
        Feedback,
        {
            "dedupe_key": key or f"{source}:{job_id}:{uuid.uuid4().hex}",
            "job_id": job_id,
            "attempt": attempt,
            "tier": tier,
            "source": source,
            "correct": correct,
            "score": score,
            "note": note,
        },
        ["dedupe_key"],
    )


def read_labels(path: Path) -> list[Label]:
    """`{"job_id", "correct"?, "expected"?, "note"?}` per line; the first bad line is an InputError."""
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InputError(str(path), 0, "<file>", f"cannot be read: {exc.strerror or exc}") from None
    with stream:
        return [_label(item.value, str(path), item.line) for item in strict_records(stream, str(path))]


def _label(record: Any, source: str, number: int) -> Label:
    if not isinstance(record, dict) or not isinstance(record.get("job_id"), str):
        raise InputError(source, number, "job_id", "a string is required")
    correct = record.get("correct")
    if correct is not None and not isinstance(correct, bool):
        raise InputError(source, number, "correct", "must be true or false")
    if correct is None and "expected" not in record:
        raise InputError(source, number, "correct", "give correct or expected")
    return Label(number, record["job_id"], correct, record.get("expected"), record.get("note"))


def import_labels(session: Session, path: Path, labels: list[Label]) -> int:
    """Gold labels, all or none: a label for an unknown job refuses the file. One label per job.

    A label without `correct` is judged by comparing its `expected` with the job's result
    (`routing.gold.matches_expected`); a job that ended without a result was not correct,
    and a job still running refuses the file (label it once it has finished).
    """
    ids = [label.job_id for label in labels]
    states = dict(session.execute(select(Job.id, Job.state).where(Job.id.in_(ids))).tuples().all())
    results = select(Result.job_id, Result.output).where(Result.job_id.in_(ids))
    outputs: dict[str, dict[str, Any] | None] = dict(session.execute(results).tuples().all())
    verdicts = []
    for label in labels:
        state = states.get(label.job_id)
        if state is None:
            raise InputError(str(path), label.line, "job_id", f"no job {label.job_id!r}")
        if label.correct is not None:
            verdicts.append(label.correct)
        elif not JobState(state).terminal:
            raise InputError(str(path), label.line, "expected", f"job {label.job_id!r} is still {state}")
        else:
            verdicts.append(matches_expected(outputs.get(label.job_id), label.expected))
    for label, correct in zip(labels, verdicts, strict=True):
        note = (
            label.note
            if label.expected is None
            else json.dumps({"expected": label.expected, "note": label.note})
        )
        record_feedback(session, label.job_id, "gold", correct, None, note, key=f"gold:{label.job_id}")
    return len(labels)


def review_queue(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """Jobs held for a person, oldest first, with the reasons of their last verdict."""
    jobs = (
        session.execute(
            select(Job).where(Job.state == JobState.NEEDS_REVIEW.value).order_by(Job.finished_at).limit(limit)
        )
        .scalars()
        .all()
    )
    rows = []
    for job in jobs:
        attempt = session.execute(
            select(Attempt).where(Attempt.job_id == job.id).order_by(Attempt.number.desc()).limit(1)
        ).scalar_one_or_none()
        reasons = (attempt.reasons or {}).get("reasons", []) if attempt else []
        rows.append({"job_id": job.id, "kind": job.kind, "tier": job.tier, "reasons": reasons})
    return rows


def decide_review(session: Session, job_id: str, accept: bool, note: str | None) -> None:
    """A person's decision on a held job: it ends the job and is recorded as feedback."""
    target = JobState.SUCCEEDED if accept else JobState.FAILED
    if not move_job(
        session, job_id, target, error=None if accept else f"rejected in review: {note or ''}".strip()
    ):
        raise InputError("tierflow review", 0, "job", f"job {job_id!r} is not held for review")
    record_feedback(session, job_id, "review", accept, None, note, key=f"review:{job_id}")
