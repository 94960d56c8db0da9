"""The figures the Prometheus exporters report, read from the store (plain rows, no prometheus).

Counted from PostgreSQL (or SQLite), the source of truth: exact across every worker, and
unchanged by a worker's restart. Each function is one aggregate query.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tierflow.routing.states import JobState
from tierflow.store.models import Attempt, ExpertResult, Feedback, Job, PolicyVersion


def jobs_by_kind_tier_state(session: Session) -> list[tuple[str, str, str, int]]:
    rows = session.execute(
        select(Job.kind, Job.tier, Job.state, func.count()).group_by(Job.kind, Job.tier, Job.state)
    )
    return [(kind, tier or "none", state, int(n)) for kind, tier, state, n in rows]


def attempts_by_tier_verdict(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        select(Attempt.tier, Attempt.verdict, func.count()).group_by(Attempt.tier, Attempt.verdict)
    )
    return [(tier, verdict or "pending", int(n)) for tier, verdict, n in rows]


def spend_by_tier_model(session: Session) -> list[tuple[str, str, float, int, int]]:
    """(tier, provider:model, cost, input tokens, output tokens) of the model experts' results."""
    query = (
        select(
            Attempt.tier,
            ExpertResult.provider,
            ExpertResult.model,
            func.sum(ExpertResult.cost_usd),
            func.sum(ExpertResult.input_tokens),
            func.sum(ExpertResult.output_tokens),
        )
        .join(Attempt, (Attempt.job_id == ExpertResult.job_id) & (Attempt.number == ExpertResult.attempt))
        .where(ExpertResult.model.is_not(None))
        .group_by(Attempt.tier, ExpertResult.provider, ExpertResult.model)
    )
    return [
        (tier, f"{provider}:{model}", float(cost or 0), int(tokens_in or 0), int(tokens_out or 0))
        for tier, provider, model, cost, tokens_in, tokens_out in session.execute(query)
    ]


def model_calls(session: Session) -> list[dict[str, Any]]:
    """Every recorded model call ({"model", "outcome", "latency_s", ...}) of every expert."""
    calls: list[dict[str, Any]] = []
    for (recorded,) in session.execute(select(ExpertResult.calls).where(ExpertResult.calls.is_not(None))):
        calls.extend(call for call in recorded or [] if isinstance(call, dict))
    return calls


def reviews(session: Session) -> tuple[int, dict[str, int]]:
    """Jobs held for a person now, and the decisions people made (accepted / rejected)."""
    held = session.execute(select(func.count()).where(Job.state == JobState.NEEDS_REVIEW.value)).scalar_one()
    rows = session.execute(
        select(Feedback.correct, func.count()).where(Feedback.source == "review").group_by(Feedback.correct)
    )
    decided = {("accepted" if correct else "rejected"): int(n) for correct, n in rows}
    return int(held), decided


def policy_versions(session: Session) -> tuple[int, int]:
    """Policy versions published, and how many of them were rollbacks."""
    total = session.execute(select(func.count()).select_from(PolicyVersion)).scalar_one()
    rollbacks = session.execute(
        select(func.count()).where(
            PolicyVersion.reason.like("%rollback%") | PolicyVersion.reason.like("%rolling back%")
        )
    ).scalar_one()
    return int(total), int(rollbacks)
