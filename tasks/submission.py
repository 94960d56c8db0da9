"""Submitting a JSONL batch: validate every line, store in one transaction, then enqueue."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from tierflow.routing.errors import InputError, ServiceUnavailable
from tierflow.routing.jobs import LineIssue, parse_lines
from tierflow.store.db import redact
from tierflow.store.models import utcnow
from tierflow.store.submit import store_batch
from tierflow.tasks.dispatch import send_classify
from tierflow.tasks.runtime import Runtime


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
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(str(path), 0, "<file>", "no such file") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputError(str(path), line, "<line>", "not UTF-8 text") from None


def check_broker(app: Any) -> None:
    """Raise ServiceUnavailable naming the broker when it cannot be reached."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
    except (BrokerError, OSError) as exc:
        raise ServiceUnavailable("broker", redact(app.conf.broker_url), str(exc)) from None


def submit_file(app: Any, runtime: Runtime, path: Path, skip_invalid: bool = False) -> SubmitReport:
    """Validate, store and enqueue a batch. With any bad line and no skip_invalid, store nothing."""
    return submit_lines(app, runtime, str(path), read_lines(path), skip_invalid)


def submit_lines(
    app: Any, runtime: Runtime, source: str, lines: list[str], skip_invalid: bool = False
) -> SubmitReport:
    """`submit_file` for lines already in hand (the Python client, the HTTP API); `source` names them."""
    parsed = parse_lines(lines, runtime.settings.max_payload_bytes)
    report = SubmitReport(source, None, rejected=list(parsed.issues))
    if (parsed.issues and not skip_invalid) or not parsed.jobs:
        return report
    check_broker(app)
    stale_after = utcnow() + timedelta(seconds=runtime.settings.stage_timeout_s)
    stored = store_batch(
        runtime.sessions, source, parsed.jobs, stale_after, refuse_conflicts=not skip_invalid
    )
    report.rejected.extend(stored.conflicts)
    report.rejected.sort(key=lambda issue: issue.line)
    if stored.conflicts and not skip_invalid:
        return report
    report.batch_id = stored.batch_id
    report.accepted = len(stored.new_job_ids)
    report.duplicates = stored.duplicates
    for job_id in stored.new_job_ids:
        send_classify(app, job_id)
    return report
