"""Reading a batch back: counts per state and tier, one row per job, and its summary."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tierflow.store.models import Attempt, Batch, ExpertResult, Job, Result


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    total: int
    by_state: dict[str, int]
    by_tier: dict[str, int]
    # the children of its decomposed jobs, by state: not counted in `total` (their parent is)
    children: dict[str, int] = field(default_factory=dict)


def batch_exists(session: Session, batch_id: str) -> bool:
    return session.get(Batch, batch_id) is not None


def batch_status(session: Session, batch_id: str) -> BatchStatus:
    child = Job.parent_id.is_not(None)
    rows = session.execute(
        select(Job.state, Job.tier, child, func.count())
        .where(Job.batch_id == batch_id)
        .group_by(Job.state, Job.tier, child)
    ).all()
    by_state: Counter[str] = Counter()
    by_tier: Counter[str] = Counter()
    children: Counter[str] = Counter()
    for state, tier, is_child, count in rows:
        if is_child:
            children[state] += count
            continue
        by_state[state] += count
        by_tier[tier or "-"] += count
    return BatchStatus(batch_id, sum(by_state.values()), dict(by_state), dict(by_tier), dict(children))


def batch_results(session: Session, batch_id: str) -> list[dict[str, Any]]:
    """One row per job of the batch, in order of ids, a decomposed job's children (`parent`
    naming it) right after it, in part order."""
    jobs = session.execute(select(Job).where(Job.batch_id == batch_id).order_by(Job.id)).scalars().all()
    jobs = sorted(jobs, key=_family_order)
    ids = [job.id for job in jobs]
    paths: dict[str, list[str]] = defaultdict(list)
    for job_id, tier in session.execute(
        select(Attempt.job_id, Attempt.tier)
        .where(Attempt.job_id.in_(ids))
        .order_by(Attempt.job_id, Attempt.number)
    ):
        paths[job_id].append(tier)
    spend = {
        job_id: (cost, tokens)
        for job_id, cost, tokens in session.execute(
            select(
                ExpertResult.job_id,
                func.sum(ExpertResult.cost_usd),
                func.sum(ExpertResult.input_tokens + ExpertResult.output_tokens),
            )
            .where(ExpertResult.job_id.in_(ids))
            .group_by(ExpertResult.job_id)
        )
    }
    results = {r.job_id: r for r in session.execute(select(Result).where(Result.job_id.in_(ids))).scalars()}
    return [_row(job, paths[job.id], spend.get(job.id, (0.0, 0)), results.get(job.id)) for job in jobs]


def _family_order(job: Job) -> tuple[str, int]:
    if job.parent_id is None:
        return (job.id, 0)
    return (job.parent_id, 1 + int((job.meta or {}).get("part", 0)))


def _row(job: Job, path: list[str], spend: tuple[float, int], result: Result | None) -> dict[str, Any]:
    latency = (job.finished_at - job.created_at).total_seconds() if job.finished_at else None
    return {
        "job_id": job.id,
        "kind": job.kind,
        "state": job.state,
        "tier_path": path,
        "output": result.output if result else None,
        "verdict": result.verdict if result else None,
        "quality": result.quality if result else None,
        "cost_usd": round(float(spend[0] or 0.0), 8),
        "tokens": int(spend[1] or 0),
        "latency_s": round(latency, 3) if latency is not None else None,
        "error": job.error,
        "parent": job.parent_id,
    }


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the demo and `tierflow status` end with: a decomposed job counts once, with
    its children's cost."""
    total_cost = sum(row["cost_usd"] for row in rows)
    rows = [row for row in rows if row.get("parent") is None]
    latencies = [row["latency_s"] for row in rows if row["latency_s"] is not None]
    final_tiers = Counter(row["tier_path"][-1] if row["tier_path"] else "-" for row in rows)
    return {
        "jobs": len(rows),
        "final_tier": dict(final_tiers),
        "first_tier": dict(Counter(row["tier_path"][0] if row["tier_path"] else "-" for row in rows)),
        "escalations": sum(max(0, len(row["tier_path"]) - 1) for row in rows),
        "states": dict(Counter(row["state"] for row in rows)),
        "total_cost_usd": total_cost,
        "cost_per_job_usd": total_cost / len(rows) if rows else 0.0,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
    }
