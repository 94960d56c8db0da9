"""Storing a submitted batch held in memory: one transaction, idempotent on job id.

For a batch read from a file or a stream of any size, store.staged_batch.store_stream
gives the same guarantees without holding the batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tierflow.routing.jobs import LineIssue, ParsedJob
from tierflow.routing.states import JobState
from tierflow.store.db import insert_ignore, transaction
from tierflow.store.models import Batch, Job

CHUNK_ROWS = 2000


@dataclass
class StoredBatch:
    batch_id: str
    new_job_ids: list[str] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[LineIssue] = field(default_factory=list)


def batch_id_for(job_ids: list[str]) -> str:
    """The same set of jobs always makes the same batch, so a resubmission adds nothing."""
    digest = hashlib.sha256("\n".join(sorted(job_ids)).encode()).hexdigest()
    return f"batch-{digest[:16]}"


def find_conflicts(session: Session, jobs: list[ParsedJob]) -> tuple[set[str], list[LineIssue]]:
    """Job ids already stored with the same content, and lines reusing an id for other content."""
    by_id = {job.spec.job_id(): job for job in jobs}
    ids = list(by_id)
    existing = [
        row
        for start in range(0, len(ids), CHUNK_ROWS)
        for row in session.execute(
            select(Job.id, Job.content_hash).where(Job.id.in_(ids[start : start + CHUNK_ROWS]))
        ).all()
    ]
    same, conflicts = set(), []
    for job_id, content_hash in existing:
        parsed = by_id[job_id]
        if content_hash == parsed.spec.content_hash():
            same.add(job_id)
        else:
            conflicts.append(LineIssue(parsed.line, "id", f"job {job_id} already exists with other content"))
    return same, conflicts


def store_batch(
    sessions: sessionmaker[Session],
    source: str,
    jobs: list[ParsedJob],
    stale_after: datetime,
    refuse_conflicts: bool = True,
) -> StoredBatch:
    """Store the batch and its new jobs as queued; nothing is stored if conflicts refuse it."""
    batch_id = batch_id_for([job.spec.job_id() for job in jobs])
    with transaction(sessions) as session:
        same, conflicts = find_conflicts(session, jobs)
        stored = StoredBatch(batch_id, duplicates=len(same), conflicts=conflicts)
        if conflicts and refuse_conflicts:
            return stored
        conflicting = {issue.line for issue in conflicts}
        fresh = [j for j in jobs if j.spec.job_id() not in same and j.line not in conflicting]
        insert_ignore(session, Batch, {"id": batch_id, "source": source, "job_count": len(jobs)}, ["id"])
        rows = [_job_row(batch_id, job, stale_after) for job in fresh]
        for start in range(0, len(rows), CHUNK_ROWS):  # a statement takes at most 65,535 parameters
            insert_ignore(session, Job, rows[start : start + CHUNK_ROWS], ["id"])
        stored.new_job_ids = [str(row["id"]) for row in rows]
    return stored


def _job_row(batch_id: str, job: ParsedJob, stale_after: datetime) -> dict[str, object]:
    spec = job.spec
    return {
        "id": spec.job_id(),
        "batch_id": batch_id,
        "kind": spec.kind,
        "payload": spec.payload,
        "metadata": job.stored_metadata.model_dump(mode="json"),
        "content_hash": spec.content_hash(),
        "state": JobState.QUEUED.value,
        "attempt": 0,
        "redeliveries": 0,
        "stale_after": stale_after,
    }
