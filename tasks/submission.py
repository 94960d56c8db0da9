"""Submitting a JSONL batch: validate every line, store in one transaction, then enqueue.

The file is read one line at a time (routing.job_lines), staged and stored in bulk
(store.staged_batch), and its new jobs are published in batches after the commit
(tasks.dispatch.send_classify_many): memory does not grow with the file. A crash
between the commit and the last publish leaves queued jobs that the reconciler
sends again (routing.recovery: their queue is empty, or has handed out younger
messages, or their stale deadline passed).

A job's sent_at must not be earlier than its message's publish (the reconciler would
take a message still waiting for a lost one). Rewriting every row of a large batch
after its publish costs more than storing it, so the jobs are stored with the time by
which their messages are expected out (publish_allowance: the INSERT, the commit and
the publish at a pace any broker keeps); only the slices published after it are
marked again (store.leases.mark_published), as every slice used to be. The allowance
grows with the batch and with how slow this submission has been so far (a loaded
database is slow at the INSERT as at the staging), and is at most one lease: the
reconciler may find a lost classify message of a fresh batch up to one lease later,
past the lease it waits anyway.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as BrokerError

from tierflow.routing.errors import InputError, ServiceUnavailable
from tierflow.routing.job_lines import read_jobs
from tierflow.routing.jobs import LineIssue, ParsedJob
from tierflow.store.db import redact, transaction
from tierflow.store.leases import mark_published
from tierflow.store.models import utcnow
from tierflow.store.staged_batch import batch_job_ids, store_stream
from tierflow.tasks.dispatch import send_classify_many
from tierflow.tasks.runtime import Runtime

FILE = "<file>"
# On a quiet machine the INSERT, the commit and the publishes of 100,000 jobs take about 5 s.
PUBLISH_ALLOWANCE_S = 2.0
PUBLISH_ALLOWANCE_PER_JOB_S = 50e-6
# ... and about as long as reading and staging them took: the same database, the same load.
PUBLISH_ALLOWANCE_PER_STAGING_S = 1.5


def publish_allowance(jobs: int, staging_s: float, lease_s: float) -> timedelta:
    """How long after its INSERT a batch of `jobs` new jobs, staged in `staging_s`, is expected
    to be published; at most one lease."""
    expected = PUBLISH_ALLOWANCE_S + PUBLISH_ALLOWANCE_PER_JOB_S * jobs
    return timedelta(seconds=min(max(expected, PUBLISH_ALLOWANCE_PER_STAGING_S * staging_s), lease_s))


@dataclass
class SubmitReport:
    source: str
    batch_id: str | None
    accepted: int = 0
    duplicates: int = 0
    rejected: list[LineIssue] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [issue.as_dict() for issue in self.rejected],
        }

    def issue_lines(self) -> list[str]:
        return [f"{self.source}:{i.line}: {i.field}: {i.reason}" for i in self.rejected]


def read_lines(path: Path) -> list[str]:
    """The lines of a small JSONL file, split on `\\n` alone (U+2028 and kin are text)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(str(path), 0, FILE, "no such file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), data[: exc.start].count(b"\n") + 1, "<line>", "not UTF-8 text") from None
    lines = text.split("\n")
    return lines[:-1] if lines and not lines[-1] else lines


def open_batch(path: Path) -> IO[bytes]:
    """The file opened for routing.job_lines; InputError when it cannot be."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InputError(str(path), 0, FILE, "no such file") from None
    except OSError as exc:
        raise InputError(str(path), 0, FILE, f"cannot be read: {exc.strerror or exc}") from None


def check_broker(app: Any) -> None:
    """Raise ServiceUnavailable naming the broker when it cannot be reached."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
    except (BrokerError, OSError) as exc:
        raise ServiceUnavailable("broker", redact(app.conf.broker_url), str(exc)) from None


def submit_file(app: Any, runtime: Runtime, path: Path, skip_invalid: bool = False) -> SubmitReport:
    """Validate, store and enqueue a batch. With any bad line and no skip_invalid, store nothing."""
    with open_batch(path) as stream:
        items = read_jobs(stream, str(path), runtime.settings.max_payload_bytes, runtime.kinds)
        return submit_stream(app, runtime, str(path), items, skip_invalid)


def submit_lines(
    app: Any, runtime: Runtime, source: str, lines: list[str], skip_invalid: bool = False
) -> SubmitReport:
    """`submit_file` for lines already in hand (the Python client, the HTTP API); `source` names them.
    No lines at all is an empty report, not an error."""
    if not lines:
        return SubmitReport(source, None)
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode()
    items = read_jobs(io.BytesIO(data), source, runtime.settings.max_payload_bytes, runtime.kinds)
    return submit_stream(app, runtime, source, items, skip_invalid)


def submit_stream(
    app: Any,
    runtime: Runtime,
    source: str,
    items: Iterable[ParsedJob | LineIssue],
    skip_invalid: bool = False,
) -> SubmitReport:
    """submit_file for parsed lines from anywhere (a client, an API): the same guarantees.

    `items` is read once, in order; the line numbers in it are those reported.
    """
    started = time.monotonic()
    stale_after = utcnow() + timedelta(seconds=runtime.settings.stage_timeout_s)

    def sent_at_for(jobs: int) -> datetime:
        return utcnow() + publish_allowance(jobs, time.monotonic() - started, runtime.settings.lease_s)

    stored = store_stream(
        runtime.sessions,
        source,
        items,
        stale_after,
        skip_invalid,
        before_commit=lambda: check_broker(app),
        sent_at_for=sent_at_for,
    )
    if not stored.staged and not stored.issues:
        raise InputError(source, 1, FILE, "no jobs: the file is empty or has only blank lines")
    report = SubmitReport(source, stored.batch_id, rejected=stored.issues)
    if stored.batch_id is None:
        return report
    report.accepted, report.duplicates = stored.accepted, stored.duplicates
    if stored.accepted:
        publish_batch(app, runtime, stored.batch_id, stored.accepted, stored.sent_at)
    return report


def publish_batch(
    app: Any, runtime: Runtime, batch_id: str, stored: int, recorded: datetime | None = None
) -> int:
    """Send classify for the batch's queued jobs, after their commit; returns how many were sent.

    `recorded` is the sent_at the jobs were stored with: a slice published by then keeps it."""
    with app.connection_for_write() as connection:  # no I/O: the transport's error types
        errors = (KombuError, OSError, *connection.connection_errors, *connection.channel_errors)
    sent = 0
    try:
        for ids in batch_job_ids(runtime.sessions, batch_id):
            sent += send_classify_many(app, ids)
            # The jobs wait on their message from its publish, not from the batch's commit: a large
            # batch takes seconds to publish, and reconcile must not take the wait for a loss.
            if recorded is None or utcnow() > recorded:
                with transaction(runtime.sessions) as session:
                    mark_published(session, ids)
        return sent
    except errors as exc:
        reason = f"{exc}; the {stored} stored jobs are sent again by the reconciler"
        raise ServiceUnavailable("broker", redact(app.conf.broker_url), reason) from None
