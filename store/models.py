"""The tables of tierflow. The same models serve PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(512))
    job_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))  # a declared kind's name (routing/kinds/)
    payload: Mapped[dict[str, Any]]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    # indexed with stale_after and with sent_at (below), which lead with it
    state: Mapped[str] = mapped_column(String(32))
    # A decomposed job's children name it here; None for every other job (indexed: children only).
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    tier: Mapped[str | None] = mapped_column(String(8))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    redeliveries: Mapped[int] = mapped_column(Integer, default=0)  # times sent again by reconcile, in all
    stalled_resends: Mapped[int] = mapped_column(Integer, default=0)  # ... since it last changed state
    stale_after: Mapped[datetime]
    # When the newest message this job waits on was sent (routing/recovery.py reads it).
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_state_stale_after", "state", "stale_after"),
        Index("ix_jobs_state_sent_at", "state", "sent_at"),
        Index(
            "ix_jobs_parent_id",
            "parent_id",
            postgresql_where=text("parent_id IS NOT NULL"),
            sqlite_where=text("parent_id IS NOT NULL"),
        ),
    )


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(32))
    decision: Mapped[dict[str, Any]]
    verdict: Mapped[str | None] = mapped_column(String(32))
    quality: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    queue: Mapped[str | None] = mapped_column(String(32))
    worker: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("job_id", "number", name="uq_attempts_job_number"),)


class ExpertResult(Base):
    __tablename__ = "expert_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    expert: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(128))
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    confidence: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "attempt", "expert", name="uq_expert_results_job_attempt_expert"),
    )


class Result(Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    attempt: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(8))
    verdict: Mapped[str] = mapped_column(String(32))
    quality: Mapped[float] = mapped_column(Float)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    attempt: Mapped[int | None] = mapped_column(Integer)
    tier: Mapped[str | None] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16))
    correct: Mapped[bool | None]
    score: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PolicyVersion(Base):
    __tablename__ = "policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[dict[str, Any]]
    reason: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What the reflect run that wrote this version saw, and its account of what changed.
    statistics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reflection: Mapped[str | None] = mapped_column(Text)


class WorkerBeat(Base):
    """A worker's latest heartbeat: the jobs it holds (their lease) and what its queues handed it."""

    __tablename__ = "worker_beats"

    worker: Mapped[str] = mapped_column(String(255), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(index=True)
    lease_until: Mapped[datetime]
    holding: Mapped[list[str]] = mapped_column(JSON)
    # queue -> newest publish time (seconds since the epoch) of a message the worker received
    received: Mapped[dict[str, Any]]


class KnowledgeArticle(Base):
    """A policy article the support retriever searches (loaded by `tierflow kb load`)."""

    __tablename__ = "kb_articles"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(String(512))
    body: Mapped[str] = mapped_column(Text)
    # the subfolder it was read from; "": none. A kind's specialist searches its own sections.
    section: Mapped[str] = mapped_column(String(64), default="", server_default="", index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """An HTTP API key of a tenant; only its SHA-256 is kept (`tierflow keys create`)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class ApiFile(Base):
    """A file of the OpenAI Files API: an uploaded batch input, or a batch's output or error file."""

    __tablename__ = "api_files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiBatch(Base):
    """A batch of the OpenAI Batch API; its requests are the jobs of one tierflow batch."""

    __tablename__ = "api_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64), index=True)
    input_file_id: Mapped[str] = mapped_column(ForeignKey("api_files.id"))
    endpoint: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    job_batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    total: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    in_progress_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]


class ApiBatchRequest(Base):
    """One line of a Batch API input file: its custom_id and the job it became."""

    __tablename__ = "api_batch_requests"

    batch_id: Mapped[str] = mapped_column(ForeignKey("api_batches.id"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    custom_id: Mapped[str] = mapped_column(String(512))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)


class Judgement(Base):
    """The sampled judge's work on one job (tasks/judging.py): at most one per job.

    state: running (the call is under way; its estimate counts against the day's budget),
    graded (a score and a reason; also written as feedback, source "judge"), failed (the
    judge's answer failed its schema twice, or the call failed: never a grade), or
    over_budget (not asked: the day's budget was spent).
    """

    __tablename__ = "judgements"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    day: Mapped[str] = mapped_column(String(10), index=True)  # UTC date the budget counts it in
    model: Mapped[str | None] = mapped_column(String(200))
    score: Mapped[float | None] = mapped_column(Float)  # the judge's 1 to 10
    reason: Mapped[str | None] = mapped_column(Text)
    estimate_usd: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class JudgeSpend(Base):
    """What judging has spent (finished judgements) or holds (running ones' estimates) per UTC day."""

    __tablename__ = "judge_spend"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
