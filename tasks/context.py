"""The facts a routing decision needs, gathered from the job, the store and the cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tierflow.providers.tokens import count_tokens
from tierflow.routing.analysis import job_text
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.policy import Policy
from tierflow.routing.states import Tier
from tierflow.store.families import family_spent
from tierflow.store.lifecycle import JobView
from tierflow.store.models import ExpertResult, utcnow
from tierflow.tasks.runtime import Runtime


def unavailable_models(runtime: Runtime, policy: Policy) -> frozenset[str]:
    """Models whose breaker is open right now, cluster-wide."""
    if runtime.breakers is None:
        return frozenset()
    refs = {ref for models in policy.tier_models.values() for ref in models}
    snapshot = runtime.breakers.snapshot(refs)
    return frozenset(ref for ref, status in snapshot.items() if status.state.value == "open")


def spent_usd(session: Session, job_id: str) -> float:
    total = session.execute(select(func.sum(ExpertResult.cost_usd)).where(ExpertResult.job_id == job_id))
    return float(total.scalar_one() or 0.0)


def job_spent(session: Session, job: JobView) -> float:
    """What the job has spent; a decomposed job's child, what its whole family has: the parent's
    budget caps its children's spend together."""
    parent = (job.metadata or {}).get("parent")
    if parent is None and ((job.analysis or {}).get("split") or {}).get("parts"):
        parent = job.id  # the parent itself, merging
    return family_spent(session, str(parent)) if parent else spent_usd(session, job.id)


def decision_context(session: Session, runtime: Runtime, policy: Policy, job: JobView) -> DecisionContext:
    metadata: dict[str, Any] = job.metadata or {}
    budget = metadata.get("budget_usd")
    deadline = metadata.get("deadline")
    seconds_left = None
    if deadline:
        due = datetime.fromisoformat(str(deadline))
        due = due if due.tzinfo else due.replace(tzinfo=UTC)  # a deadline without a zone is UTC
        seconds_left = (due - utcnow()).total_seconds()
    return DecisionContext(
        job_id=job.id,
        job_tokens=count_tokens(job_text(runtime.kinds.get(job.kind), job.payload)),
        budget_left_usd=None if budget is None else float(budget) - job_spent(session, job),
        seconds_left=seconds_left,
        unavailable=unavailable_models(runtime, policy),
        prices=runtime.decision_prices,
        pinned_tier=Tier(metadata["tier"]) if metadata.get("tier") else None,
    )
