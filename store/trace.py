"""One job's whole path, read back from the store: what `tierflow explain` prints."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tierflow.store.judging import judgement_view
from tierflow.store.models import Attempt, ExpertResult, Feedback, Job, Result


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _expert(row: ExpertResult) -> dict[str, Any]:
    return {
        "expert": row.expert,
        "model": f"{row.provider}:{row.model}" if row.model else None,
        "output": row.output,
        "confidence": row.confidence,
        "error": row.error,
        "cost_usd": row.cost_usd,
        "tokens": row.input_tokens + row.output_tokens,
        "latency_s": row.latency_s,
        "calls": row.calls or [],
    }


def _attempt(row: Attempt, experts: list[ExpertResult]) -> dict[str, Any]:
    return {
        "number": row.number,
        "tier": row.tier,
        "queue": row.queue,
        "worker": row.worker,
        "decision": row.decision,
        "verdict": row.verdict,
        "quality": row.quality,
        "reasons": (row.reasons or {}).get("reasons", []),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "experts": [_expert(e) for e in experts],
    }


def job_trace(session: Session, job_id: str) -> dict[str, Any] | None:
    """The job, its analysis, every attempt with its decision and experts, its result and feedback."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    attempts = session.execute(
        select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)
    ).scalars()
    experts = (
        session.execute(
            select(ExpertResult)
            .where(ExpertResult.job_id == job_id)
            .order_by(ExpertResult.attempt, ExpertResult.expert)
        )
        .scalars()
        .all()
    )
    result = session.execute(select(Result).where(Result.job_id == job_id)).scalar_one_or_none()
    feedback = session.execute(
        select(Feedback).where(Feedback.job_id == job_id).order_by(Feedback.id)
    ).scalars()
    trace_attempts = [_attempt(a, [e for e in experts if e.attempt == a.number]) for a in attempts]
    latency = (job.finished_at - job.created_at).total_seconds() if job.finished_at else None
    return {
        "job_id": job.id,
        "batch_id": job.batch_id,
        "kind": job.kind,
        "state": job.state,
        "metadata": job.meta,
        "analysis": job.analysis,
        "attempts": trace_attempts,
        "result": None
        if result is None
        else {
            "verdict": result.verdict,
            "tier": result.tier,
            "quality": result.quality,
            "output": result.output,
        },
        "feedback": [
            {"source": f.source, "tier": f.tier, "correct": f.correct, "score": f.score, "note": f.note}
            for f in feedback
        ],
        "judgement": judgement_view(session, job_id),
        "cost_usd": sum(e.cost_usd for e in experts),
        "tokens": sum(e.input_tokens + e.output_tokens for e in experts),
        "latency_s": latency,
        "redeliveries": job.redeliveries,
        "error": job.error,
        "parent": job.parent_id,
        "children": _children(session, job_id),
    }


def _children(session: Session, parent_id: str) -> list[dict[str, Any]]:
    """A decomposed job's children, in part order: each one's route (its last attempt's decision),
    where it ended and what it cost."""
    children = session.execute(select(Job).where(Job.parent_id == parent_id)).scalars().all()
    found = []
    for child in sorted(children, key=lambda c: int((c.meta or {}).get("part", 0))):
        last = session.execute(
            select(Attempt).where(Attempt.job_id == child.id).order_by(Attempt.number.desc()).limit(1)
        ).scalar_one_or_none()
        cost = session.execute(
            select(func.coalesce(func.sum(ExpertResult.cost_usd), 0.0)).where(ExpertResult.job_id == child.id)
        ).scalar_one()
        decision = last.decision if last is not None else {}
        found.append(
            {
                "job_id": child.id,
                "state": child.state,
                "attempts": last.number if last is not None else 0,
                "tier": child.tier,
                "specialist": decision.get("specialist"),
                "intent": decision.get("intent"),
                "stage": decision.get("stage"),
                "cost_usd": float(cost),
            }
        )
    return found
