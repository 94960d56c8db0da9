"""The aggregations `tierflow report` reads from the store, for PostgreSQL and SQLite alike.

Everything here takes a Selection (one batch, jobs since a moment, or every job) and
returns plain data: counts, spend, latencies, outcomes and traces. Rendering lives in
worker/report.py; this module imports nothing of Celery, HTML or plotting.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, func, select, true
from sqlalchemy.orm import Session

from tierflow.routing.errors import InputError
from tierflow.routing.states import TERMINAL_STATES, JobState, Tier
from tierflow.store.models import Attempt, Batch, ExpertResult, Job, PolicyVersion, Result

if TYPE_CHECKING:
    from tierflow.providers.pricing import Price

REPORT_SOURCE = "tierflow report"
TERMINAL = frozenset(state.value for state in TERMINAL_STATES)
TIERS = [tier.value for tier in Tier]


@dataclass(frozen=True)
class Selection:
    """Which jobs a report covers: one batch, the jobs created since a moment, or all."""

    batch_id: str | None = None
    since: datetime | None = None

    def describe(self) -> str:
        if self.batch_id is not None:
            return f"batch {self.batch_id}"
        if self.since is not None:
            return f"jobs created since {self.since.isoformat(sep=' ', timespec='minutes')}"
        return "every job in the store"

    def where(self) -> ColumnElement[bool]:
        """The condition on Job that selects the report's jobs."""
        condition: ColumnElement[bool] = true()
        if self.batch_id is not None:
            condition = and_(condition, Job.batch_id == self.batch_id)
        if self.since is not None:
            condition = and_(condition, Job.created_at >= self.since)
        return condition


@dataclass(frozen=True)
class Spend:
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Outcome:
    """One terminal job: the policy version that routed it, when it ended, its state."""

    policy_version: int
    finished_at: datetime
    state: str


@dataclass(frozen=True)
class AttemptTrace:
    number: int
    tier: str
    decision: dict[str, Any]
    verdict: str | None
    quality: float | None
    reasons: list[str]
    latency_s: float | None
    experts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class JobTrace:
    """Everything `tierflow explain JOB` shows, for one job."""

    job_id: str
    kind: str
    state: str
    created_at: datetime
    analysis: dict[str, Any] | None
    attempts: list[AttemptTrace]
    verdict: str | None
    quality: float | None
    cost_usd: float
    latency_s: float | None
    error: str | None

    @property
    def tier_path(self) -> list[str]:
        return [attempt.tier for attempt in self.attempts]


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; the store writes UTC, so say so."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_since(text: str) -> datetime:
    """An ISO date or date-time, in UTC; a naive one is taken as UTC. InputError for anything else."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(REPORT_SOURCE, 0, "--since", f"not a date: {text!r} (use YYYY-MM-DD)") from None
    return as_utc(moment).astimezone(UTC)  # SQLite compares the stored UTC text, so no other offset


def require_batch(session: Session, selection: Selection) -> None:
    if selection.batch_id is not None and session.get(Batch, selection.batch_id) is None:
        raise InputError(REPORT_SOURCE, 0, "--batch", f"no batch {selection.batch_id!r}")


def jobs_by_tier_state(session: Session, selection: Selection) -> dict[tuple[str, str], int]:
    """Job count per (final tier, state); a job never routed has tier '-'."""
    rows = session.execute(
        select(Job.tier, Job.state, func.count()).where(selection.where()).group_by(Job.tier, Job.state)
    ).all()
    return {(tier or "-", state): int(count) for tier, state, count in rows}


def _spend_rows(session: Session, selection: Selection, key: Any) -> dict[str, Spend]:
    rows = session.execute(
        select(
            key,
            func.coalesce(func.sum(ExpertResult.cost_usd), 0.0),
            func.coalesce(func.sum(ExpertResult.input_tokens), 0),
            func.coalesce(func.sum(ExpertResult.output_tokens), 0),
        )
        .join(Job, Job.id == ExpertResult.job_id)
        .join(Attempt, and_(Attempt.job_id == ExpertResult.job_id, Attempt.number == ExpertResult.attempt))
        .where(selection.where())
        .group_by(key)
    ).all()
    return {str(name): Spend(float(cost), int(inp), int(out)) for name, cost, inp, out in rows}


def spend_by_tier(session: Session, selection: Selection) -> dict[str, Spend]:
    """What the expert calls cost, per tier of the attempt that made them."""
    return _spend_rows(session, selection, Attempt.tier)


def spend_by_kind(session: Session, selection: Selection) -> dict[str, Spend]:
    """What the expert calls cost, per job class (kind)."""
    return _spend_rows(session, selection, Job.kind)


def job_paths(session: Session, selection: Selection) -> dict[str, tuple[str, list[str]]]:
    """Each selected job that was routed: its state and its attempts' tiers, in order."""
    paths: dict[str, tuple[str, list[str]]] = {}
    rows = session.execute(
        select(Attempt.job_id, Job.state, Attempt.tier)
        .join(Job, Job.id == Attempt.job_id)
        .where(selection.where())
        .order_by(Attempt.job_id, Attempt.number)
    )
    for job_id, state, tier in rows:
        paths.setdefault(job_id, (state, []))[1].append(tier)
    return paths


def attempt_latencies(session: Session, selection: Selection) -> dict[str, list[float]]:
    """Seconds from an attempt's start to its verdict, per tier, for finished attempts."""
    latencies: dict[str, list[float]] = defaultdict(list)
    rows = session.execute(
        select(Attempt.tier, Attempt.started_at, Attempt.finished_at)
        .join(Job, Job.id == Attempt.job_id)
        .where(selection.where(), Attempt.started_at.is_not(None), Attempt.finished_at.is_not(None))
    )
    for tier, started, finished in rows:
        if started is None or finished is None:
            continue
        latencies[tier].append((as_utc(finished) - as_utc(started)).total_seconds())
    return dict(latencies)


def outcomes(session: Session, selection: Selection, terminal: frozenset[str]) -> list[Outcome]:
    """Terminal jobs with the policy version of their first routing decision."""
    version = Attempt.decision["policy_version"].as_integer()
    rows = session.execute(
        select(version, Job.finished_at, Job.updated_at, Job.state)
        .join(Attempt, and_(Attempt.job_id == Job.id, Attempt.number == 1))
        .where(selection.where(), Job.state.in_(terminal))
    )
    return [
        Outcome(int(v) if v is not None else 0, as_utc(finished or updated), state)
        for v, finished, updated, state in rows
    ]


def last_jobs(session: Session, selection: Selection, limit: int) -> list[JobTrace]:
    """The `limit` most recently created selected jobs, newest first, with their traces."""
    jobs = (
        session.execute(
            select(Job).where(selection.where()).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        )
        .scalars()
        .all()
    )
    ids = [job.id for job in jobs]
    attempts: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in session.execute(
        select(Attempt).where(Attempt.job_id.in_(ids)).order_by(Attempt.job_id, Attempt.number)
    ).scalars():
        attempts[attempt.job_id].append(attempt)
    experts: dict[tuple[str, int], list[ExpertResult]] = defaultdict(list)
    for row in session.execute(
        select(ExpertResult).where(ExpertResult.job_id.in_(ids)).order_by(ExpertResult.expert)
    ).scalars():
        experts[(row.job_id, row.attempt)].append(row)
    results = {r.job_id: r for r in session.execute(select(Result).where(Result.job_id.in_(ids))).scalars()}
    return [_trace(job, attempts[job.id], experts, results.get(job.id)) for job in jobs]


def _trace(
    job: Job,
    attempts: list[Attempt],
    experts: dict[tuple[str, int], list[ExpertResult]],
    result: Result | None,
) -> JobTrace:
    traces = [_attempt_trace(a, experts.get((job.id, a.number), [])) for a in attempts]
    cost = sum(e["cost_usd"] for t in traces for e in t.experts)
    latency = (as_utc(job.finished_at) - as_utc(job.created_at)).total_seconds() if job.finished_at else None
    return JobTrace(
        job_id=job.id,
        kind=job.kind,
        state=job.state,
        created_at=as_utc(job.created_at),
        analysis=job.analysis,
        attempts=traces,
        verdict=result.verdict if result else (traces[-1].verdict if traces else None),
        quality=result.quality if result else None,
        cost_usd=float(cost),
        latency_s=latency,
        error=job.error,
    )


def _attempt_trace(attempt: Attempt, rows: list[ExpertResult]) -> AttemptTrace:
    latency = None
    if attempt.started_at and attempt.finished_at:
        latency = (as_utc(attempt.finished_at) - as_utc(attempt.started_at)).total_seconds()
    return AttemptTrace(
        number=attempt.number,
        tier=attempt.tier,
        decision=attempt.decision,
        verdict=attempt.verdict,
        quality=attempt.quality,
        reasons=list((attempt.reasons or {}).get("reasons", [])),
        latency_s=latency,
        experts=[
            {
                "expert": row.expert,
                "model": f"{row.provider}:{row.model}" if row.provider else (row.model or "-"),
                "confidence": row.confidence,
                "cost_usd": float(row.cost_usd),
                "tokens": int(row.input_tokens) + int(row.output_tokens),
                "latency_s": float(row.latency_s),
                "error": row.error,
            }
            for row in rows
        ],
    )


@dataclass(frozen=True)
class VersionNote:
    """A policy version the selection's jobs were decided by: why it exists, and its reflection."""

    version: int
    parent: int | None
    reason: str
    reflection: str | None


def version_notes(session: Session, versions: Iterable[int]) -> list[VersionNote]:
    rows = session.execute(
        select(PolicyVersion)
        .where(PolicyVersion.version.in_(sorted(set(versions))))
        .order_by(PolicyVersion.version)
    ).scalars()
    return [VersionNote(v.version, v.parent, v.reason, v.reflection) for v in rows]


@dataclass(frozen=True)
class ReportData:
    selection: Selection
    tier_state: dict[tuple[str, str], int]
    tier_spend: dict[str, Spend]
    kind_spend: dict[str, Spend]
    paths: dict[str, tuple[str, list[str]]]
    latencies: dict[str, list[float]]
    outcomes: list[Outcome]
    last: list[JobTrace]
    large_model: str
    large_price: Price
    versions: list[VersionNote] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.tier_state.values())

    def always_large(self, spend: Spend) -> float:
        return self.large_price.cost(spend.input_tokens, spend.output_tokens)


def collect(
    session: Session, selection: Selection, last_n: int, large_model: str, large_price: Price
) -> ReportData:
    """Every figure the page shows, read in one transaction."""
    require_batch(session, selection)
    ended = outcomes(session, selection, TERMINAL)
    used = [o.policy_version for o in ended if o.policy_version is not None]
    return ReportData(
        selection=selection,
        tier_state=jobs_by_tier_state(session, selection),
        tier_spend=spend_by_tier(session, selection),
        kind_spend=spend_by_kind(session, selection),
        paths=job_paths(session, selection),
        latencies=attempt_latencies(session, selection),
        outcomes=ended,
        last=last_jobs(session, selection, last_n),
        large_model=large_model,
        large_price=large_price,
        versions=version_notes(session, used),
    )


def rates(data: ReportData) -> dict[str, tuple[int, float, float]]:
    """Per first tier (and 'all'): jobs routed, escalation rate, review rate."""
    groups: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for state, path in data.paths.values():
        groups[path[0]].append((state, path))
        groups["all"].append((state, path))
    table = {}
    for name in [*(t for t in TIERS if t in groups), "all"]:
        jobs = groups.get(name, [])
        escalated = sum(1 for _, path in jobs if len(path) > 1)
        review = sum(1 for state, _ in jobs if state == JobState.NEEDS_REVIEW.value)
        table[name] = (len(jobs), escalated / len(jobs) if jobs else 0.0, review / len(jobs) if jobs else 0.0)
    return table


def success_series(outcomes: Iterable[Outcome]) -> tuple[list[str], dict[int, list[float | None]]]:
    """Buckets (hours, or days over a span past two days) and success rate per policy version."""
    items = list(outcomes)
    if not items:
        return [], {}
    span = max(o.finished_at for o in items) - min(o.finished_at for o in items)
    fmt = "%Y-%m-%d %H:00" if span.total_seconds() <= 2 * 86400 else "%Y-%m-%d"
    counts: dict[tuple[int, str], Counter[bool]] = defaultdict(Counter)
    for o in items:
        counts[(o.policy_version, o.finished_at.astimezone(UTC).strftime(fmt))][o.state == "succeeded"] += 1
    buckets = sorted({bucket for _, bucket in counts})
    series: dict[int, list[float | None]] = {}
    for version in sorted({v for v, _ in counts}):
        cells = [counts.get((version, b)) for b in buckets]
        series[version] = [100 * c[True] / c.total() if c else None for c in cells]
    return buckets, series
