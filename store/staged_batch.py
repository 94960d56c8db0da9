"""Storing a submitted batch of any size from a stream: one transaction, bulk writes.

The valid lines go, a chunk at a time, into a temporary staging table (PostgreSQL's
COPY; SQLite's executemany); the database then finds what the old in-memory path
found in Python: job ids repeated within the batch, ids already stored with the
same content (duplicates) or with other content (conflicts), and the batch id, the
hash of the sorted job ids, read back in order. One INSERT ... SELECT moves the new
jobs into `jobs`. Nothing of the stream is held in memory but one chunk and the
issues, and nothing is stored when a bad line or a conflict refuses the batch:
the transaction is rolled back, the staging table with it.

The same guarantees as `store.submit.store_batch`, whose batch ids it reproduces.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    delete,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from tierflow.routing.errors import StoreError
from tierflow.routing.jobs import LineIssue, ParsedJob
from tierflow.routing.states import JobState
from tierflow.store.db import insert_ignore, transaction
from tierflow.store.models import Batch, Job, utcnow

CHUNK_ROWS = 2000
ID_READ_ROWS = 5000

_STAGING = Table(
    "tierflow_submit_staging",
    MetaData(),
    Column("line", Integer, nullable=False),
    Column("id", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    prefixes=["TEMPORARY"],
)
_COLUMNS = ("line", "id", "kind", "payload", "metadata", "content_hash")


@dataclass
class StagedBatch:
    """What storing a stream did. `batch_id` is None when nothing valid was read."""

    batch_id: str | None = None
    accepted: int = 0
    duplicates: int = 0
    staged: int = 0
    issues: list[LineIssue] = field(default_factory=list)
    refused: bool = False
    sent_at: datetime | None = None  # what the new jobs' sent_at says


class _Refused(Exception):
    """Rolls the transaction back: the batch is refused, nothing of it stays."""


@contextmanager
def _no_parameters_in_errors() -> Iterator[None]:
    """A database refusal as one line without the statement's parameters (the payloads)."""
    try:
        yield
    except DBAPIError as exc:
        first = str(exc.orig).strip().split("\n", 1)[0] if exc.orig else type(exc).__name__
        raise StoreError(f"the batch could not be stored, nothing of it was: {first}") from None


def store_stream(
    sessions: sessionmaker[Session],
    source: str,
    items: Iterable[ParsedJob | LineIssue],
    stale_after: datetime,
    skip_invalid: bool = False,
    before_commit: Callable[[], None] | None = None,
    sent_at_for: Callable[[int], datetime] | None = None,
) -> StagedBatch:
    """Stage, check and store a stream of parsed lines; all or nothing unless skip_invalid.

    Without skip_invalid, any issue (a bad line, an id repeated within the batch, an id
    reused for other content) refuses the whole batch: `refused` is set, nothing is
    stored. With it, the lines at fault are left out and reported. `before_commit` runs
    when there is something to commit; whatever it raises rolls the batch back.
    `sent_at_for(jobs)` gives the new jobs' sent_at (default: the time of their INSERT),
    for a caller that publishes them by then (tasks.submission).
    """
    result = StagedBatch()
    try:
        with _no_parameters_in_errors(), transaction(sessions) as session:
            # Dropped below, or with the rollback; SQLite's driver runs DDL outside the transaction,
            # so a refused batch's table can outlive it on that connection: it is this one's to drop.
            _STAGING.drop(session.connection(), checkfirst=True)
            _STAGING.create(session.connection())
            result.staged = _stage(session, items, result.issues, skip_invalid)
            _store_staged(session, source, stale_after, skip_invalid, result, sent_at_for)
            if result.refused:
                raise _Refused
            _STAGING.drop(session.connection())
            if result.accepted and before_commit is not None:
                before_commit()
    except _Refused:
        pass
    return result


def _store_staged(
    session: Session,
    source: str,
    stale_after: datetime,
    skip_invalid: bool,
    result: StagedBatch,
    sent_at_for: Callable[[int], datetime] | None,
) -> None:
    if result.issues and not skip_invalid:
        result.refused = True
        return
    _analyze_staging(session)
    result.issues.extend(_repeated_ids(session, drop=skip_invalid))
    result.issues.extend(_conflicts(session))
    result.issues.sort(key=lambda issue: issue.line)
    if result.issues and not skip_invalid:
        result.refused = True
        return
    count = _count(session)
    if not count:
        return
    result.duplicates = _duplicates(session)
    result.batch_id = _batch_id(session)
    insert_ignore(session, Batch, {"id": result.batch_id, "source": source, "job_count": count}, ["id"])
    result.sent_at = utcnow() if sent_at_for is None else sent_at_for(count)
    result.accepted = _insert_new(session, result.batch_id, stale_after, result.sent_at)


def _stage(
    session: Session, items: Iterable[ParsedJob | LineIssue], issues: list[LineIssue], skip_invalid: bool
) -> int:
    """Write the valid lines into the staging table a chunk at a time; collect the issues.

    Once an issue refuses the batch (no skip_invalid), the later lines are still read, so
    that every bad line is reported, but no longer staged. Returns the rows staged.
    """
    staged = 0
    chunk: list[tuple[Any, ...]] = []
    for item in items:
        if isinstance(item, LineIssue):
            issues.append(item)
        elif skip_invalid or not issues:
            chunk.append(_row(item))
            if len(chunk) >= CHUNK_ROWS:
                staged += _write_rows(session, chunk)
                chunk = []
    if chunk and (skip_invalid or not issues):
        staged += _write_rows(session, chunk)
    return staged


def _row(job: ParsedJob) -> tuple[Any, ...]:
    spec = job.spec
    return (
        job.line,
        spec.job_id(),
        spec.kind,
        json.dumps(spec.payload),  # what SQLAlchemy's JSON type would write
        job.stored_metadata.model_dump_json(),  # the values of model_dump(mode="json"), as store_batch writes
        spec.content_hash(),
    )


def _write_rows(session: Session, rows: list[tuple[Any, ...]]) -> int:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {_STAGING.name} ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.close()
    else:
        connection.execute(_STAGING.insert(), [dict(zip(_COLUMNS, row, strict=True)) for row in rows])
    return len(rows)


def _analyze_staging(session: Session) -> None:
    if session.connection().dialect.name == "postgresql":
        session.connection().exec_driver_sql(f"ANALYZE {_STAGING.name}")


def _repeated_ids(session: Session, drop: bool) -> list[LineIssue]:
    """A job id on more than one line: the first line keeps it, the later ones are issues.

    One hash aggregate tells whether any id repeats; only then is the staging table indexed
    for the query that names each repeat's first line."""
    repeated = select(_STAGING.c.id).group_by(_STAGING.c.id).having(func.count() > 1).limit(1)
    if session.execute(repeated).first() is None:
        return []
    session.connection().exec_driver_sql(f"CREATE INDEX {_STAGING.name}_id ON {_STAGING.name} (id, line)")
    earlier = _STAGING.alias("earlier")
    first = (
        select(func.min(earlier.c.line))
        .where(earlier.c.id == _STAGING.c.id, earlier.c.line < _STAGING.c.line)
        .scalar_subquery()
    )
    rows = session.execute(
        select(_STAGING.c.line, first).where(first.is_not(None)).order_by(_STAGING.c.line)
    ).all()
    issues = [LineIssue(line, "id", f"duplicate of the job on line {was}") for line, was in rows]
    if issues and drop:
        later = exists().where(earlier.c.id == _STAGING.c.id, earlier.c.line < _STAGING.c.line)
        session.execute(delete(_STAGING).where(later))
    return issues


def _conflicts(session: Session) -> list[LineIssue]:
    """Ids already stored with other content; they are left out (or refuse the batch)."""
    rows = session.execute(
        select(_STAGING.c.line, _STAGING.c.id)
        .join(Job, Job.id == _STAGING.c.id)
        .where(Job.content_hash != _STAGING.c.content_hash)
        .order_by(_STAGING.c.line)
    ).all()
    return [LineIssue(line, "id", f"job {job_id} already exists with other content") for line, job_id in rows]


def _duplicates(session: Session) -> int:
    same = select(func.count()).select_from(_STAGING).join(Job, Job.id == _STAGING.c.id)
    return int(session.execute(same.where(Job.content_hash == _STAGING.c.content_hash)).scalar_one())


def _count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(_STAGING)).scalar_one())


def _batch_id(session: Session) -> str:
    """store.submit.batch_id_for over the staged ids, read in order a slice at a time."""
    collation = "C" if session.connection().dialect.name == "postgresql" else "BINARY"
    ids = select(_STAGING.c.id).order_by(_STAGING.c.id.collate(collation))
    digest = hashlib.sha256()
    separator = b""
    for partition in session.execute(ids.execution_options(yield_per=ID_READ_ROWS)).partitions():
        digest.update(separator + b"\n".join(job_id.encode() for (job_id,) in partition))
        separator = b"\n"
    return f"batch-{digest.hexdigest()[:16]}"


def _insert_new(session: Session, batch_id: str, stale_after: datetime, sent_at: datetime) -> int:
    """The staged jobs not stored yet, as queued jobs of the batch; returns how many went in."""
    dialect = session.connection().dialect.name
    as_json = (lambda column: cast(column, JSON)) if dialect == "postgresql" else (lambda column: column)
    now = utcnow()
    rows = (
        select(
            _STAGING.c.id,
            literal(batch_id),
            _STAGING.c.kind,
            as_json(_STAGING.c.payload),
            as_json(_STAGING.c.metadata),
            _STAGING.c.content_hash,
            literal(JobState.QUEUED.value),
            literal(0),
            literal(0),
            literal(stale_after),
            literal(now),
            literal(now),
            literal(sent_at),
            literal(0),
        )
        .where(~exists().where(Job.id == _STAGING.c.id))
        .order_by(_STAGING.c.line)
    )
    columns = ["id", "batch_id", "kind", "payload", "metadata", "content_hash", "state", "attempt"]
    columns += ["redeliveries", "stale_after", "created_at", "updated_at", "sent_at", "stalled_resends"]
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = (
        module.insert(Job.__table__).from_select(columns, rows).on_conflict_do_nothing(index_elements=["id"])
    )
    result = session.execute(stmt.execution_options(preserve_rowcount=True))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def batch_job_ids(sessions: sessionmaker[Session], batch_id: str) -> Iterator[list[str]]:
    """The ids of a batch's jobs still queued, a slice at a time (read after the commit)."""
    query = select(Job.id).where(Job.batch_id == batch_id, Job.state == JobState.QUEUED.value)
    with transaction(sessions) as session:
        for partition in session.execute(query.execution_options(yield_per=ID_READ_ROWS)).partitions():
            yield [job_id for (job_id,) in partition]
