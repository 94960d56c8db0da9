"""What a user submits: JobSpec, its payloads per kind, and the JSONL reader.

Pure: pydantic only. A bad line becomes a LineIssue naming line and field; the
caller decides whether one bad line refuses the whole batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from tierflow.routing.jsonl import JsonValueError, field_name, loads

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024

JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class JobKind(str, Enum):
    SUPPORT = "support"
    DOCUMENT = "document"
    PROMPT = "prompt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SupportPayload(_Strict):
    text: Text
    subject: str | None = None
    customer: str | None = None


class DocumentPayload(_Strict):
    text: Text
    doc_type: str | None = None


class PromptPayload(_Strict):
    prompt: Text


PAYLOAD_MODELS: dict[JobKind, type[_Strict]] = {
    JobKind.SUPPORT: SupportPayload,
    JobKind.DOCUMENT: DocumentPayload,
    JobKind.PROMPT: PromptPayload,
}


class JobMetadata(_Strict):
    tenant: str | None = None
    priority: int = Field(default=5, ge=0, le=9)
    budget_usd: float | None = Field(default=None, ge=0)
    deadline: datetime | None = None


class JobSpec(_Strict):
    id: JobId | None = None
    kind: JobKind
    payload: dict[str, Any]
    metadata: JobMetadata = JobMetadata()

    def typed_payload(self) -> _Strict:
        return PAYLOAD_MODELS[self.kind].model_validate(self.payload)

    def content_hash(self) -> str:
        """A stable hash of what the job asks, independent of key order."""
        body = {
            "kind": self.kind.value,
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


@dataclass(frozen=True)
class ParsedJob:
    line: int
    spec: JobSpec


@dataclass(frozen=True)
class ParsedBatch:
    jobs: list[ParsedJob]
    issues: list[LineIssue]


def parse_line(text: str, line: int, max_payload_bytes: int) -> JobSpec | LineIssue:
    """Validate one JSONL line; return the spec or the first issue found."""
    try:
        raw = loads(text)
    except JsonValueError as exc:
        return LineIssue(line, exc.field, exc.reason)
    return parse_value(raw, line, max_payload_bytes)


def parse_value(raw: Any, line: int, max_payload_bytes: int, line_bytes: int = 0) -> JobSpec | LineIssue:
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
        spec.typed_payload()
    except ValidationError as exc:
        return _first_issue(exc, line)
    return spec


def _first_issue(exc: ValidationError, line: int) -> LineIssue:
    error = exc.errors()[0]
    location = field_name([str(part) for part in error["loc"]])
    if exc.title in {model.__name__ for model in PAYLOAD_MODELS.values()}:
        location = f"payload.{location}"
    return LineIssue(line, location, error["msg"])


def parse_lines(lines: Iterable[str], max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ParsedBatch:
    """Validate every non-blank line; duplicate job ids within the batch are issues too."""
    jobs: list[ParsedJob] = []
    issues: list[LineIssue] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip(" \t\r\n"):  # JSON's whitespace only: U+2028 alone is no blank line
            continue
        result = parse_line(text, number, max_payload_bytes)
        if isinstance(result, LineIssue):
            issues.append(result)
            continue
        job_id = result.job_id()
        if job_id in seen:
            issues.append(LineIssue(number, "id", f"duplicate of the job on line {seen[job_id]}"))
            continue
        seen[job_id] = number
        jobs.append(ParsedJob(number, result))
    return ParsedBatch(jobs, issues)
