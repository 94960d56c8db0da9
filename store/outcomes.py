"""The judged attempts the learner trains on, read from the store in a few set-based queries.

Owns `JudgedAttempt` (an attempt with its verdict, its label, its cost and latency,
the policy version that decided its job, and its experts' outputs) and
`judged_attempts`, the most recent ones. Its grade (routing/grades.py) is a person's
label (feedback from `tierflow feedback`, `tierflow review` or gold labels, the latest
for that attempt) where one exists, else a person's rating, else the sampled judge's
score, else the verdict: an accepted answer is good, anything else is not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tierflow.routing.grades import Grade, GradeSource, outcome_grade
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
    grade: Grade | None = None  # the graded outcome and its source; None: the verdict alone
    search: dict[str, Any] | None = None  # the strategy search step it was (Decision.search)


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
    labels, ratings, judge_scores = _graded_signals(session, jobs)
    spent, outputs = _expert_rows(session, jobs)
    judged = []
    for attempt, kind, payload in reversed(rows):
        key = (attempt.job_id, attempt.number)
        label = labels.get(key)
        grade = outcome_grade(label, ratings.get(key), judge_scores.get(key), attempt.verdict == "accept")
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
                good=grade.good(),
                labelled_by_person=label is not None,
                cost_usd=spent.get(key, 0.0),
                latency_s=latency,
                policy_version=versions.get(attempt.job_id),
                outputs=outputs.get(key, {}),
                grade=grade,
                search=(attempt.decision or {}).get("search"),
            )
        )
    return judged


def _first_versions(session: Session, jobs: list[str]) -> dict[str, int | None]:
    firsts = session.execute(
        select(Attempt.job_id, Attempt.decision).where(Attempt.job_id.in_(jobs), Attempt.number == 1)
    ).all()
    return {job_id: (decision or {}).get("policy_version") for job_id, decision in firsts}


Signals = dict[tuple[str, int], float]


def _graded_signals(
    session: Session, jobs: list[str]
) -> tuple[dict[tuple[str, int], bool], Signals, Signals]:
    """Per attempt, the latest of each: a person's right or wrong, a person's rating on [0, 1],
    and the judge's score on [0, 1]."""
    rows = session.execute(
        select(Feedback.job_id, Feedback.attempt, Feedback.source, Feedback.correct, Feedback.score)
        .where(
            Feedback.job_id.in_(jobs),
            Feedback.source != "automatic",
            Feedback.attempt.is_not(None),
        )
        .order_by(Feedback.id)
    ).all()
    labels: dict[tuple[str, int], bool] = {}
    ratings: Signals = {}
    judged: Signals = {}
    for job_id, attempt, source, correct, score in rows:
        if attempt is None:
            continue
        key = (job_id, attempt)
        if source == GradeSource.JUDGE.value:
            if score is not None:
                judged[key] = float(score)
        elif correct is not None:
            labels[key] = bool(correct)
        elif score is not None:
            ratings[key] = float(score)
    return labels, ratings, judged


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
