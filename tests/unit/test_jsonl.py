"""routing.jsonl: lines end at \\n alone, and every value out of bounds is named by line and field."""

from __future__ import annotations

import io
import json

import pytest

from tierflow.routing.errors import InputError
from tierflow.routing.job_lines import read_jobs
from tierflow.routing.jobs import LineIssue, ParsedJob, parse_lines
from tierflow.routing.jsonl import MAX_DEPTH, Record, field_name, read_records, strict_records

SECRET = "s3cret-payload-words"


def _read(data: bytes, limit: int = 1 << 20) -> list[Record | InputError]:
    return list(read_records(io.BytesIO(data), "jobs.jsonl", limit))


def _only_error(data: bytes) -> InputError:
    (item,) = _read(data)
    assert isinstance(item, InputError), item
    assert SECRET not in str(item) and "\n" not in str(item)
    return item


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c"])
def test_unicode_line_separators_inside_strings_are_text_and_keep_line_numbers(separator: str) -> None:
    lines = [json.dumps({"text": f"one{separator}two"}, ensure_ascii=False), "", '{"text": "three"}']
    records = _read("\n".join(lines).encode() + b"\n")
    assert [(r.line, r.value["text"]) for r in records if isinstance(r, Record)] == [
        (1, f"one{separator}two"),
        (3, "three"),
    ]


def test_crlf_line_endings_and_a_missing_final_newline_are_read() -> None:
    records = _read(b'{"a": 1}\r\n{"a": 2}')
    assert [(r.line, r.value) for r in records if isinstance(r, Record)] == [(1, {"a": 1}), (2, {"a": 2})]


def test_nesting_ten_thousand_deep_names_the_field_without_a_recursion_error() -> None:
    tree = b"[" * 10_000 + b"]" * 10_000
    line = b'{"payload": {"text": "' + SECRET.encode() + b'", "tree": ' + tree + b"}}"
    error = _only_error(line)
    assert (error.line, error.field) == (1, "payload.tree.0.0...")
    assert error.reason == f"nested deeper than {MAX_DEPTH} levels"


def test_nesting_past_the_limit_but_within_the_parser_is_refused_too() -> None:
    deep = b'{"a": [1, {"b": ' + b"[" * 100 + b"]" * 100 + b"}]}"
    assert _only_error(deep).field == "a.1.b.0..."
    shallow = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert isinstance(_read(shallow)[0], Record)


def test_an_integer_of_five_thousand_digits_is_refused_and_a_long_one_is_kept() -> None:
    error = _only_error(b'{"metadata": {"priority": ' + b"9" * 5000 + b'}, "x": "' + SECRET.encode() + b'"}')
    assert (error.field, error.reason) == ("metadata.priority", "integer of 5000 digits; at most 64")
    (kept,) = _read(b'{"n": -' + b"9" * 64 + b"}")
    assert isinstance(kept, Record) and kept.value["n"] == -int("9" * 64)


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        ("Infinity", "Infinity is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ("NaN", "NaN is not a JSON number"),
        ("1e999", "number out of range (not finite)"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(literal: str, reason: str) -> None:
    line = f'{{"payload": {{"text": "{SECRET}"}}, "metadata": {{"budget_usd": {literal}}}}}'
    error = _only_error(line.encode())
    assert (error.line, error.field, error.reason) == (1, "metadata.budget_usd", reason)


def test_a_lone_surrogate_is_refused_and_a_pair_is_kept() -> None:
    error = _only_error(b'{"payload": {"text": "' + SECRET.encode() + b' \\ud800"}}')
    assert error.field == "payload.text" and "lone UTF-16 surrogate" in error.reason
    assert _only_error(b'{"payload": {"\\udc00": 1}}').field == "payload"
    (pair,) = _read(b'{"text": "\\ud83d\\ude00 and \\\\ud800"}')
    assert isinstance(pair, Record) and pair.value["text"] == "\U0001f600 and \\ud800"


def test_a_byte_order_mark_is_refused() -> None:
    error = _only_error(b"\xef\xbb\xbf" + json.dumps({"text": SECRET}).encode())
    assert (error.line, error.field) == (1, "<line>") and "byte order mark" in error.reason


def test_bytes_that_are_not_utf8_are_refused_on_their_line() -> None:
    items = _read(b'{"a": 1}\n{"a": "\xff"}\n')
    assert isinstance(items[0], Record)
    assert isinstance(items[1], InputError) and items[1].line == 2 and "not UTF-8" in items[1].reason


def test_a_line_over_the_limit_is_refused_unread_and_the_next_line_keeps_its_number() -> None:
    items = _read(json.dumps({"text": SECRET * 100}).encode() + b'\n{"a": 1}\n', limit=256)
    assert isinstance(items[0], InputError) and items[0].reason == "longer than 256 bytes"
    assert SECRET not in str(items[0])
    assert isinstance(items[1], Record) and (items[1].line, items[1].value) == (2, {"a": 1})


def test_syntax_errors_say_where_without_the_text() -> None:
    error = _only_error(b'{"text": "' + SECRET.encode() + b'",}')
    assert error.field == "<line>" and error.reason.startswith("not valid JSON (")


def test_odd_keys_are_quoted_in_field_names_so_an_error_stays_one_line() -> None:
    assert field_name(["payload", "a\nb"]) == 'payload."a\\nb"'
    assert field_name(["p", "x" * 100]).endswith('..."') and len(field_name(["p", "x" * 100])) < 50
    assert field_name([]) == "<line>"


def test_strict_records_raise_the_first_bad_line() -> None:
    with pytest.raises(InputError) as raised:
        list(strict_records(io.BytesIO(b'{"a": 1}\n\n{"a": NaN}\n'), "f.jsonl"))
    assert str(raised.value) == "f.jsonl:3: a: NaN is not a JSON number"


def test_read_jobs_keeps_a_valid_job_whose_text_holds_line_separators() -> None:
    text = "Card lost\u2028please block it\u0085thanks"
    good = json.dumps({"kind": "support", "payload": {"text": text}}, ensure_ascii=False)
    bad = json.dumps({"kind": "support", "payload": {"text": "x"}, "metadata": {"budget_usd": -1}})
    items = list(read_jobs(io.BytesIO(f"{good}\n{bad}\n{good.replace('lost', 'found')}\n".encode()), "f"))
    assert isinstance(items[0], ParsedJob) and items[0].spec.payload["text"] == text
    assert isinstance(items[1], LineIssue) and (items[1].line, items[1].field) == (2, "metadata.budget_usd")
    assert isinstance(items[2], ParsedJob) and items[2].line == 3


def test_read_jobs_still_measures_a_payload_that_might_be_too_big() -> None:
    line = json.dumps({"kind": "prompt", "payload": {"prompt": "x" * 3000}})
    (issue,) = read_jobs(io.BytesIO(line.encode()), "f", max_payload_bytes=2000)
    assert isinstance(issue, LineIssue) and issue.field == "payload" and "exceeds the limit" in issue.reason


def test_parse_lines_uses_the_same_bounds() -> None:
    batch = parse_lines(['{"kind": "prompt", "payload": {"prompt": "hi"}, "metadata": {"budget_usd": NaN}}'])
    assert [(i.line, i.field, i.reason) for i in batch.issues] == [
        (1, "metadata.budget_usd", "NaN is not a JSON number")
    ]
