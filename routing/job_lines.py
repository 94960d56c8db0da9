"""A submitted JSONL stream read one line at a time: each line a ParsedJob or a LineIssue.

Pure: routing.jsonl splits and bounds the lines, routing.jobs validates them. Nothing
here remembers earlier lines, so memory does not grow with the file; duplicate job
ids across lines are the store's to find (store.submit stages the batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO

from tierflow.routing.errors import InputError
from tierflow.routing.jobs import DEFAULT_MAX_PAYLOAD_BYTES, LineIssue, ParsedJob, parse_value, parsed_job
from tierflow.routing.jsonl import read_records
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry

# A payload's limit is on its JSON re-encoded without escapes; a line may escape every
# character (six bytes for one) and carries the kind and the metadata besides.
LINE_BYTES_PER_PAYLOAD_BYTE = 8
LINE_OVERHEAD_BYTES = 64 * 1024


def line_limit(max_payload_bytes: int) -> int:
    """The longest line worth reading for a payload limit; longer lines are refused unread."""
    return max_payload_bytes * LINE_BYTES_PER_PAYLOAD_BYTE + LINE_OVERHEAD_BYTES


def read_jobs(
    stream: IO[bytes],
    source: str,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    kinds: KindRegistry | None = None,
    submitted_at: datetime | None = None,
) -> Iterator[ParsedJob | LineIssue]:
    """Every non-blank line of a binary stream, validated against the kinds in force (the built-ins
    when None), in order; each job's metadata completed with its kind's defaults, deadlines counted
    from `submitted_at` (now when None)."""
    registry = kinds or builtin_registry()
    now = submitted_at or datetime.now(UTC)
    for item in read_records(stream, source, line_limit(max_payload_bytes)):
        if isinstance(item, InputError):
            yield LineIssue(item.line, item.field, item.reason)
            continue
        result = parse_value(item.value, item.line, max_payload_bytes, item.size, registry)
        yield result if isinstance(result, LineIssue) else parsed_job(item.line, result, registry, now)
