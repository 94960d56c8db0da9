"""What a user submits: JobSpec and the JSONL reader.

Pure: pydantic only. A bad line becomes a LineIssue naming line and field; the
caller decides whether one bad line refuses the whole batch. A payload is checked
against its kind's schema in the registry in force (routing/kinds/).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from tierflow.routing.jsonl import JsonValueError, field_name, loads
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry
from tierflow.routing.kinds.spec import KindRouting
from tierflow.routing.states import Tier

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024

JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
# A kind's name: what the store keeps and the registry looks up.
KindName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobMetadata(_Strict):
    tenant: str | None = None
    priority: int = Field(default=5, ge=0, le=9)
    budget_usd: float | None = Field(default=None, ge=0)
    deadline: datetime | None = None
    # The tier the job runs on, chosen by the caller: no routing, no escalation past it.
    tier: Tier | None = None


class JobSpec(_Strict):
    id: JobId | None = None
    kind: KindName
    payload: dict[str, Any]
    metadata: JobMetadata = JobMetadata()

    def content_hash(self) -> str:
        """A stable hash of what the job asks, independent of key order."""
        body = {
            "kind": self.kind,
            "payload": self.payload,
            "metadata": self.metadata.model_dump(mode="json", exclude_defaults=True),
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def job_id(self) -> str:
        return self.id or f"job-{self.content_hash()[:20]}"


@dataclass(frozen=True)
class LineIssue:
    line: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


def with_kind_defaults(metadata: JobMetadata, routing: KindRouting, submitted_at: datetime) -> JobMetadata:
    """The job's metadata with its kind's budget and deadline (seconds from submission) where it
    gives none of its own."""
    update: dict[str, Any] = {}
    if metadata.budget_usd is None and routing.budget_usd is not None:
        update["budget_usd"] = routing.budget_usd
    if metadata.deadline is None and routing.deadline_s is not None:
        update["deadline"] = submitted_at + timedelta(seconds=routing.deadline_s)
    return metadata.model_copy(update=update) if update else metadata


@dataclass(frozen=True)
class ParsedJob:
    """A valid line. `metadata` is what is stored: the job's own with its kind's defaults; the
    job's id and content hash stay those of what it gave (a resubmission is the same job)."""

    line: int
    spec: JobSpec
    metadata: JobMetadata | None = None

    @property
    def stored_metadata(self) -> JobMetadata:
        return self.metadata if self.metadata is not None else self.spec.metadata


def parsed_job(line: int, spec: JobSpec, kinds: KindRegistry, submitted_at: datetime) -> ParsedJob:
    """A valid line's job, its metadata completed with its kind's routing defaults."""
    metadata = with_kind_defaults(spec.metadata, kinds.get(spec.kind).routing, submitted_at)
    return ParsedJob(line, spec, metadata if metadata is not spec.metadata else None)


@dataclass(frozen=True)
class ParsedBatch:
    jobs: list[ParsedJob]
    issues: list[LineIssue]


def parse_line(
    text: str, line: int, max_payload_bytes: int, kinds: KindRegistry | None = None
) -> JobSpec | LineIssue:
    """Validate one JSONL line against the kinds in force (the built-ins when none are given);
    return the spec or the first issue found."""
    try:
        raw = loads(text)
    except JsonValueError as exc:
        return LineIssue(line, exc.field, exc.reason)
    return parse_value(raw, line, max_payload_bytes, kinds=kinds)


def parse_value(
    raw: Any, line: int, max_payload_bytes: int, line_bytes: int = 0, kinds: KindRegistry | None = None
) -> JobSpec | LineIssue:
    """Validate one decoded line (routing.jsonl bounds it); return the spec or the first issue.

    `line_bytes`, the line's length if known, spares measuring a payload that cannot be too
    big: re-encoded, a value takes at most 8 times its bytes in the line (", " for ",",
    "1000000000000000.0" for "1e15").
    """
    if not isinstance(raw, dict):
        return LineIssue(line, "<line>", "expected a JSON object")
    payload = raw.get("payload")
    if not line_bytes or 8 * line_bytes > max_payload_bytes:
        size = len(json.dumps(payload, ensure_ascii=False).encode())
        if size > max_payload_bytes:
            return LineIssue(line, "payload", f"{size} bytes exceeds the limit of {max_payload_bytes}")
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        return _first_issue(exc, line)
    return _payload_issue(spec, line, kinds or builtin_registry()) or spec


def _payload_issue(spec: JobSpec, line: int, kinds: KindRegistry) -> LineIssue | None:
    if spec.kind not in kinds:
        declared = ", ".join(repr(name) for name in kinds.names)
        return LineIssue(line, "kind", f"Input should be one of the declared kinds: {declared}")
    problems = kinds.payload_problems(spec.kind, spec.payload)
    if problems:
        field, reason = problems[0]
        return LineIssue(line, f"payload.{field}" if field != "<payload>" else "payload", reason)
    return None


def _first_issue(exc: ValidationError, line: int) -> LineIssue:
    error = exc.errors()[0]
    location = field_name([str(part) for part in error["loc"]]) or "<line>"
    return LineIssue(line, location, error["msg"])


def parse_lines(
    lines: Iterable[str],
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    kinds: KindRegistry | None = None,
    submitted_at: datetime | None = None,
) -> ParsedBatch:
    """Validate every non-blank line; duplicate job ids within the batch are issues too.
    Deadline defaults count from `submitted_at` (now when None)."""
    registry = kinds or builtin_registry()
    now = submitted_at or datetime.now(UTC)
    jobs: list[ParsedJob] = []
    issues: list[LineIssue] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip(" \t\r\n"):  # JSON's whitespace only: U+2028 alone is no blank line
            continue
        result = parse_line(text, number, max_payload_bytes, registry)
        if isinstance(result, LineIssue):
            issues.append(result)
            continue
        job_id = result.job_id()
        if job_id in seen:
            issues.append(LineIssue(number, "id", f"duplicate of the job on line {seen[job_id]}"))
            continue
        seen[job_id] = number
        jobs.append(parsed_job(number, result, registry, now))
    return ParsedBatch(jobs, issues)
