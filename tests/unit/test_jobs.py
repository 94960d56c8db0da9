"""JobSpec validation: every bad line names its line and field; good lines parse."""

from __future__ import annotations

import json

import pytest

from tierflow.routing.jobs import JobSpec, parse_lines

GOOD = {"id": "t-1", "kind": "support", "payload": {"text": "Where is my parcel?"}}


def _issues(*lines: object, limit: int = 64 * 1024) -> list[tuple[int, str, str]]:
    texts = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    return [(i.line, i.field, i.reason) for i in parse_lines(texts, limit).issues]


def test_each_kind_parses_with_its_payload() -> None:
    batch = parse_lines(
        [
            json.dumps(GOOD),
            json.dumps({"kind": "document", "payload": {"text": "Total 1.00", "doc_type": "receipt"}}),
            json.dumps({"kind": "prompt", "payload": {"prompt": "2 + 2?"}, "metadata": {"priority": 9}}),
        ]
    )
    assert not batch.issues
    assert [job.spec.kind for job in batch.jobs] == ["support", "document", "prompt"]
    assert [job.line for job in batch.jobs] == [1, 2, 3]


def test_blank_lines_are_skipped_but_keep_line_numbers() -> None:
    batch = parse_lines(["", json.dumps(GOOD), "   "])
    assert [job.line for job in batch.jobs] == [2]


@pytest.mark.parametrize(
    ("line", "field", "reason_part"),
    [
        ("{not json", "<line>", "not valid JSON"),
        ("[1, 2]", "<line>", "expected a JSON object"),
        ({"kind": "fax", "payload": {"text": "x"}}, "kind", "Input should be"),
        ({"kind": "support"}, "payload", "Field required"),
        ({"kind": "support", "payload": {"subject": "hi"}}, "payload.text", "Field required"),
        ({"kind": "support", "payload": {"text": "   "}}, "payload.text", "at least 1 character"),
        ({"kind": "prompt", "payload": {"text": "x"}}, "payload.prompt", "Field required"),
        ({"kind": "support", "payload": {"text": "x", "colour": "red"}}, "payload.colour", "Extra inputs"),
        (
            {"kind": "support", "payload": {"text": "x"}, "metadata": {"priority": 12}},
            "metadata.priority",
            "9",
        ),
        (
            {"kind": "support", "payload": {"text": "x"}, "metadata": {"budget_usd": -1}},
            "metadata.budget_usd",
            "0",
        ),
        ({"id": "has space", "kind": "support", "payload": {"text": "x"}}, "id", "pattern"),
        ({"kind": "support", "payload": {"text": "x"}, "extra": 1}, "extra", "Extra inputs"),
    ],
)
def test_bad_line_is_reported_with_line_and_field(line: object, field: str, reason_part: str) -> None:
    issues = _issues(GOOD, line)
    assert len(issues) == 1
    number, got_field, reason = issues[0]
    assert (number, got_field) == (2, field)
    assert reason_part in reason


def test_payload_over_the_size_limit_is_refused() -> None:
    big = {"kind": "support", "payload": {"text": "x" * 2000}}
    assert _issues(big, limit=1000) == [(1, "payload", "2012 bytes exceeds the limit of 1000")]


def test_duplicate_id_within_a_file_names_the_first_line() -> None:
    assert _issues(GOOD, GOOD) == [(2, "id", "duplicate of the job on line 1")]


def test_content_hash_ignores_key_order_and_gives_the_id_when_missing() -> None:
    a = JobSpec.model_validate({"kind": "support", "payload": {"text": "a", "subject": "s"}})
    b = JobSpec.model_validate({"payload": {"subject": "s", "text": "a"}, "kind": "support"})
    c = JobSpec.model_validate({"kind": "support", "payload": {"text": "b", "subject": "s"}})
    assert a.content_hash() == b.content_hash() != c.content_hash()
    assert a.job_id() == b.job_id() and a.job_id().startswith("job-")
    assert JobSpec.model_validate(GOOD).job_id() == "t-1"
