"""The HTTP API's objects: OpenAI files and batches, each batch line's job, and job outcomes.

Every read takes the caller's tenant: a row of another tenant is read as absent. The tenant
None is the API without keys (loopback only), which sees every row.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tierflow.routing.states import JobState
from tierflow.store.models import (
    ApiBatch,
    ApiBatchRequest,
    ApiFile,
    Attempt,
    ExpertResult,
    Job,
    Result,
    utcnow,
)


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def owned(tenant: str | None, row_tenant: str | None) -> bool:
    return tenant is None or tenant == row_tenant


def job_tenant(job: Job) -> str | None:
    tenant = (job.meta or {}).get("tenant")
    return str(tenant) if tenant is not None else None


def get_file(session: Session, tenant: str | None, file_id: str) -> ApiFile | None:
    row = session.get(ApiFile, file_id)
    return row if row is not None and owned(tenant, row.tenant) else None


def get_batch(session: Session, tenant: str | None, batch_id: str) -> ApiBatch | None:
    row = session.get(ApiBatch, batch_id)
    return row if row is not None and owned(tenant, row.tenant) else None


def get_job(session: Session, tenant: str | None, job_id: str) -> Job | None:
    row = session.get(Job, job_id)
    return row if row is not None and owned(tenant, job_tenant(row)) else None


def owns_job_batch(session: Session, tenant: str | None, batch_id: str) -> bool:
    """Whether the tierflow batch exists and holds a job of `tenant`."""
    query = select(Job).where(Job.batch_id == batch_id).limit(1)
    job = session.execute(query).scalar_one_or_none()
    return job is not None and owned(tenant, job_tenant(job))


def list_batches(session: Session, tenant: str | None, after: str | None, limit: int) -> list[ApiBatch]:
    """Newest first, after the batch `after` (the SDK's cursor)."""
    query = select(ApiBatch).order_by(ApiBatch.created_at.desc(), ApiBatch.id.desc())
    if tenant is not None:
        query = query.where(ApiBatch.tenant == tenant)
    if after is not None:
        cursor = get_batch(session, tenant, after)
        if cursor is not None:
            query = query.where(ApiBatch.created_at <= cursor.created_at, ApiBatch.id != cursor.id)
    return list(session.execute(query.limit(limit)).scalars())


def move_batch(session: Session, batch_id: str, sources: Sequence[str], status: str, **values: Any) -> bool:
    """Set the batch's status if it is in one of `sources`; False when another process moved it first."""
    result = session.execute(
        update(ApiBatch)
        .where(ApiBatch.id == batch_id, ApiBatch.status.in_(list(sources)))
        .values(status=status, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_requests(session: Session, batch_id: str, rows: list[tuple[int, str, str]]) -> None:
    session.add_all(ApiBatchRequest(batch_id=batch_id, line=n, custom_id=c, job_id=j) for n, c, j in rows)


def job_states(session: Session, job_batch_id: str) -> dict[str, int]:
    """The batch's requests' jobs by state (a decomposed job's children are not requests)."""
    rows = session.execute(
        select(Job.state, func.count())
        .where(Job.batch_id == job_batch_id, Job.parent_id.is_(None))
        .group_by(Job.state)
    ).all()
    return {state: int(count) for state, count in rows}


def cancel_jobs(session: Session, job_batch_id: str) -> int:
    """Fail every job of the batch that has not ended; how many were stopped."""
    live = [state.value for state in JobState if not state.terminal]
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.batch_id == job_batch_id, Job.state.in_(live))
        .values(state=JobState.FAILED.value, error="cancelled", updated_at=now, finished_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass
class Outcome:
    """What became of one job, in the terms an OpenAI response needs."""

    job_id: str
    state: str
    error: str | None
    output: dict[str, Any] | None = None
    tier: str | None = None
    model: str | None = None
    verdict: str | None = None
    quality: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    tier_path: list[str] = field(default_factory=list)
    custom_id: str | None = None
    line: int = 0


def _answering_model(decision: dict[str, Any], experts: list[ExpertResult]) -> str | None:
    """The model of the first expert, in the decision's order, that answered with a model."""
    order = {name: i for i, name in enumerate(decision.get("experts", []))}
    answered = [e for e in experts if e.model and e.error is None and e.output is not None]
    answered.sort(key=lambda e: (order.get(e.expert, len(order)), e.id))
    return answered[0].model if answered else None


def job_outcomes(session: Session, job_ids: list[str]) -> dict[str, Outcome]:
    """Outcomes of the jobs: state, result, tokens and cost over every attempt, answering model."""
    jobs = session.execute(select(Job).where(Job.id.in_(job_ids))).scalars().all()
    outcomes = {job.id: Outcome(job.id, job.state, job.error) for job in jobs}
    experts: dict[tuple[str, int], list[ExpertResult]] = defaultdict(list)
    for row in session.execute(select(ExpertResult).where(ExpertResult.job_id.in_(job_ids))).scalars():
        outcome = outcomes[row.job_id]
        outcome.input_tokens += row.input_tokens
        outcome.output_tokens += row.output_tokens
        outcome.cost_usd += row.cost_usd
        experts[(row.job_id, row.attempt)].append(row)
    attempts = session.execute(
        select(Attempt).where(Attempt.job_id.in_(job_ids)).order_by(Attempt.job_id, Attempt.number)
    ).scalars()
    decisions: dict[tuple[str, int], dict[str, Any]] = {}
    for attempt in attempts:
        outcomes[attempt.job_id].tier_path.append(attempt.tier)
        decisions[(attempt.job_id, attempt.number)] = attempt.decision
    for result in session.execute(select(Result).where(Result.job_id.in_(job_ids))).scalars():
        outcome = outcomes[result.job_id]
        outcome.output, outcome.tier = result.output, result.tier
        outcome.verdict, outcome.quality = result.verdict, result.quality
        key = (result.job_id, result.attempt)
        outcome.model = _answering_model(decisions.get(key, {}), experts[key])
    return outcomes


def request_outcomes(session: Session, batch_id: str) -> list[Outcome]:
    """Every line of a Batch API batch with its job's outcome, in line order."""
    requests = session.execute(
        select(ApiBatchRequest).where(ApiBatchRequest.batch_id == batch_id).order_by(ApiBatchRequest.line)
    ).scalars()
    rows = list(requests)
    outcomes = job_outcomes(session, [row.job_id for row in rows])
    ordered = []
    for row in rows:
        outcome = outcomes[row.job_id]
        outcome.custom_id, outcome.line = row.custom_id, row.line
        ordered.append(outcome)
    return ordered
