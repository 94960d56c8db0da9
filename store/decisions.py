"""The first decision of each job, as off-policy evaluation reads it: its propensity and analysis.

Owns `first_decisions`: for the given jobs (and, with `since`, only those created
since then), the propensity their first attempt's decision recorded (None for
decisions logged before propensities were, or where a cap or a constraint moved
the job) and the analysis it was made from.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tierflow.routing.policy_estimate import FirstDecision
from tierflow.store.models import Attempt, Job


def first_decisions(
    session: Session, job_ids: list[str], since: datetime | None = None
) -> dict[str, FirstDecision]:
    """The first decision of each of `job_ids` (created since `since`, when given)."""
    found: dict[str, FirstDecision] = {}
    for start in range(0, len(job_ids), 1000):  # bounded IN lists
        query = (
            select(Attempt.job_id, Attempt.decision, Job.analysis)
            .join(Job, Job.id == Attempt.job_id)
            .where(Attempt.number == 1, Attempt.job_id.in_(job_ids[start : start + 1000]))
        )
        if since is not None:
            query = query.where(Job.created_at >= since)
        for job_id, decision, analysis in session.execute(query).all():
            propensity = (decision or {}).get("propensity")
            found[job_id] = FirstDecision(
                None if propensity is None else float(propensity),
                analysis if isinstance(analysis, dict) else None,
            )
    return found
