"""The sampled judge's records: one judgement per job, the day's spend, the grade as feedback.

`begin_judgement` claims a job for judging and holds its estimated cost against the
day's budget under a row lock on the day's spend (so two workers cannot both take
the last of it); `finish_judgement` settles the cost, records the grade (or the
failure), and writes a graded judgement as feedback with source "judge". Both are
idempotent: a job is judged once, whatever the redeliveries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tierflow.routing.grades import GradeSource
from tierflow.routing.judging import JudgeGrade, unit_score, within_budget
from tierflow.store.db import insert_ignore
from tierflow.store.models import Feedback, Judgement, JudgeSpend, Result

JUDGE_SOURCE = GradeSource.JUDGE.value


class JudgementState(str, Enum):
    RUNNING = "running"
    GRADED = "graded"
    FAILED = "failed"
    OVER_BUDGET = "over_budget"


@dataclass(frozen=True)
class JudgeOutcome:
    """What one judge call came to: a grade, or why there is none."""

    model: str | None
    cost_usd: float
    grade: JudgeGrade | None
    failure: str | None = None


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).date().isoformat()


def _day_spend(session: Session, day: str) -> JudgeSpend:
    insert_ignore(session, JudgeSpend, {"day": day, "spent_usd": 0.0}, ["day"])
    return session.execute(select(JudgeSpend).where(JudgeSpend.day == day).with_for_update()).scalar_one()


def begin_judgement(session: Session, job_id: str, estimate_usd: float, budget_usd: float) -> bool:
    """Whether to ask the judge now. No when the job has a judgement already (a running one,
    left by a worker that died mid-call, is asked again under its first reservation), and no
    (recorded as over_budget) when the estimate does not fit in what today's budget has left."""
    existing = session.get(Judgement, job_id)
    if existing is not None:
        return existing.state == JudgementState.RUNNING.value
    day = utc_day()
    spend = _day_spend(session, day)
    fits = within_budget(spend.spent_usd, estimate_usd, budget_usd)
    state = JudgementState.RUNNING if fits else JudgementState.OVER_BUDGET
    row = {
        "job_id": job_id,
        "state": state.value,
        "day": day,
        "estimate_usd": estimate_usd if fits else 0.0,
        "cost_usd": 0.0,
        "reason": None if fits else f"today's judge budget ${budget_usd:g} has ${spend.spent_usd:.6f} spent",
    }
    if not insert_ignore(session, Judgement, row, ["job_id"]):
        return False  # another delivery claimed it first
    if fits:
        spend.spent_usd += estimate_usd
    return fits


def finish_judgement(session: Session, job_id: str, outcome: JudgeOutcome) -> bool:
    """Settle a running judgement; False when it was settled already (a duplicate delivery)."""
    row = session.execute(
        select(Judgement)
        .where(Judgement.job_id == job_id, Judgement.state == JudgementState.RUNNING.value)
        .with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return False
    spend = _day_spend(session, row.day)
    spend.spent_usd += outcome.cost_usd - row.estimate_usd
    graded = outcome.grade is not None
    row.state = (JudgementState.GRADED if graded else JudgementState.FAILED).value
    row.model, row.cost_usd, row.finished_at = outcome.model, outcome.cost_usd, datetime.now(UTC)
    if outcome.grade is None:
        row.reason = outcome.failure
        return True
    row.score, row.reason = float(outcome.grade.score), outcome.grade.reason
    result = session.execute(select(Result.attempt, Result.tier).where(Result.job_id == job_id)).first()
    insert_ignore(
        session,
        Feedback,
        {
            "dedupe_key": f"{JUDGE_SOURCE}:{job_id}",
            "job_id": job_id,
            "attempt": result[0] if result else None,
            "tier": result[1] if result else None,
            "source": JUDGE_SOURCE,
            "correct": None,
            "score": unit_score(outcome.grade.score),
            "note": f"{outcome.grade.score}/10 from {outcome.model}: {outcome.grade.reason}",
        },
        ["dedupe_key"],
    )
    return True


def judgement_view(session: Session, job_id: str) -> dict[str, Any] | None:
    """The job's judgement as `tierflow explain` shows it; None when it was not judged."""
    row = session.get(Judgement, job_id)
    if row is None:
        return None
    return {
        "state": row.state,
        "model": row.model,
        "score": row.score,
        "reason": row.reason,
        "cost_usd": row.cost_usd,
        "day": row.day,
    }


def spent_on(session: Session, day: str) -> float:
    """What judging has spent (or holds for running judgements) on a UTC day."""
    spend = session.get(JudgeSpend, day)
    return spend.spent_usd if spend is not None else 0.0
