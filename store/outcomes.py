"""The judged attempts the learner trains on, read from the store in a few set-based queries.

Owns `JudgedAttempt` (an attempt with its verdict, its label, its cost and latency,
the policy version that decided its job, and its experts' outputs) and
`judged_attempts`, the most recent ones. The label is a person's (feedback from
`tierflow feedback` or `tierflow review`, the latest for that attempt) where one
exists, else the verdict: an accepted answer is good, anything else is not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tierflow.store.models import Attempt, ExpertResult, Feedback, Job

JUDGED = ("accept", "escalate", "needs_review", "fail")
ExpertRow = tuple[dict[str, Any] | None, float | None, str | None]  # output, confidence, error


@dataclass(frozen=True)
class JudgedAttempt:
    job_id: str
    kind: str
    payload: dict[str, Any]
    tier: str
    attempt: int
    verdict: str
    good: bool
    labelled_by_person: bool
    cost_usd: float
    latency_s: float | None
    policy_version: int | None
    outputs: dict[str, ExpertRow]  # per expert


def judged_attempts(session: Session, limit: int = 10_000) -> list[JudgedAttempt]:
    """The `limit` most recently finished judged attempts, oldest first."""
    rows = session.execute(
        select(Attempt, Job.kind, Job.payload)
        .join(Job, Job.id == Attempt.job_id)
        .where(Attempt.verdict.in_(JUDGED))
        .order_by(Attempt.finished_at.desc().nulls_last(), Attempt.id.desc())
        .limit(limit)
    ).all()
    if not rows:
        return []
    keys = [(attempt.job_id, attempt.number) for attempt, _, _ in rows]
    jobs = sorted({job_id for job_id, _ in keys})
    versions = _first_versions(session, jobs)
    labels = _person_labels(session, jobs)
    spent, outputs = _expert_rows(session, jobs)
    judged = []
    for attempt, kind, payload in reversed(rows):
        key = (attempt.job_id, attempt.number)
        label = labels.get(key)
        latency = None
        if attempt.started_at is not None and attempt.finished_at is not None:
            latency = (attempt.finished_at - attempt.started_at).total_seconds()
        judged.append(
            JudgedAttempt(
                job_id=attempt.job_id,
                kind=kind,
                payload=payload,
                tier=attempt.tier,
                attempt=attempt.number,
                verdict=str(attempt.verdict),
                good=label if label is not None else attempt.verdict == "accept",
                labelled_by_person=label is not None,
                cost_usd=spent.get(key, 0.0),
                latency_s=latency,
                policy_version=versions.get(attempt.job_id),
                outputs=outputs.get(key, {}),
            )
        )
    return judged


def _first_versions(session: Session, jobs: list[str]) -> dict[str, int | None]:
    firsts = session.execute(
        select(Attempt.job_id, Attempt.decision).where(Attempt.job_id.in_(jobs), Attempt.number == 1)
    ).all()
    return {job_id: (decision or {}).get("policy_version") for job_id, decision in firsts}


def _person_labels(session: Session, jobs: list[str]) -> dict[tuple[str, int], bool]:
    """The latest feedback from a person per attempt that says right or wrong."""
    rows = session.execute(
        select(Feedback.job_id, Feedback.attempt, Feedback.correct)
        .where(
            Feedback.job_id.in_(jobs),
            Feedback.source != "automatic",
            Feedback.correct.is_not(None),
            Feedback.attempt.is_not(None),
        )
        .order_by(Feedback.id)
    ).all()
    return {(job_id, attempt): bool(correct) for job_id, attempt, correct in rows if attempt is not None}


def _expert_rows(
    session: Session, jobs: list[str]
) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], dict[str, ExpertRow]]]:
    spent: dict[tuple[str, int], float] = defaultdict(float)
    outputs: dict[tuple[str, int], dict[str, ExpertRow]] = defaultdict(dict)
    rows = session.execute(
        select(
            ExpertResult.job_id,
            ExpertResult.attempt,
            ExpertResult.expert,
            ExpertResult.output,
            ExpertResult.confidence,
            ExpertResult.error,
            ExpertResult.cost_usd,
        ).where(ExpertResult.job_id.in_(jobs))
    ).all()
    for job_id, attempt, expert, output, confidence, error, cost in rows:
        spent[(job_id, attempt)] += float(cost or 0.0)
        outputs[(job_id, attempt)][expert] = (output, confidence, error)
    return dict(spent), dict(outputs)
