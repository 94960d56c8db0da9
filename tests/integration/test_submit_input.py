"""`tierflow submit` on bad and unusual input, as a user runs it, against the real PostgreSQL and Redis.

Each bad line is one line on stderr naming file, line and field; exit status 2; nothing
stored or enqueued; no traceback; nothing of the payload echoed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, func, select

from tests.integration.conftest import run, write_jobs
from tierflow.store.models import Job
from tierflow.store.submit import batch_id_for
from tierflow.tasks.leases import SENT_HEADER

SECRET = "s3cret-payload-words"
GOOD = json.dumps({"id": "in-1", "kind": "support", "payload": {"text": "Where is my card?"}})


def _stored(pg_url: str) -> dict[str, str]:
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        rows = connection.execute(select(Job.id, Job.payload)).all()
    engine.dispose()
    return {job_id: payload.get("text") or payload.get("prompt") for job_id, payload in rows}


def _queued(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen("classify"))
    finally:
        client.close()


def _job(line: str) -> str:
    return '{"kind": "support", "payload": {"text": "' + SECRET + '", ' + line + "}"


BAD_LINES = {
    "deep nesting": (
        _job('"tree": ' + "[" * 10_000 + "]" * 10_000) + "}",
        "2: payload.tree.0.0...: nested deeper than 64 levels",
    ),
    "huge integer": (
        '{"kind": "support", "payload": {"text": "'
        + SECRET
        + '"}, "metadata": {"priority": '
        + "7" * 5000
        + "}}",
        "2: metadata.priority: integer of 5000 digits; at most 64",
    ),
    "lone surrogate": (
        '{"kind": "support", "payload": {"text": "' + SECRET + ' \\ud800"}}',
        "2: payload.text: lone UTF-16 surrogate (\\ud800-\\udfff) in a string",
    ),
    "Infinity": (
        '{"kind": "support", "payload": {"text": "' + SECRET + '"}, "metadata": {"budget_usd": Infinity}}',
        "2: metadata.budget_usd: Infinity is not a JSON number",
    ),
    "NaN": (
        '{"kind": "support", "payload": {"text": "' + SECRET + '"}, "metadata": {"budget_usd": NaN}}',
        "2: metadata.budget_usd: NaN is not a JSON number",
    ),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_line_is_one_line_naming_file_line_and_field_and_nothing_is_stored(
    case: str, env: dict[str, str], pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    line, expected = BAD_LINES[case]
    source = tmp_path / "jobs.jsonl"
    source.write_text(f"{GOOD}\n{line}\n", encoding="utf-8")
    done = run(env, "submit", str(source))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"{source}:{expected}",
        f"error: {source}: 1 invalid lines; nothing was stored (use --skip-invalid to store the valid lines)",
    ]
    assert SECRET not in done.stderr + done.stdout
    assert _stored(pg_url) == {} and _queued(redis_url) == 0


def test_a_byte_order_mark_is_refused_on_line_one(env: dict[str, str], pg_url: str, tmp_path: Path) -> None:
    source = tmp_path / "bom.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\n")
    done = run(env, "submit", str(source), "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["rejected"] == [
        {
            "line": 1,
            "field": "<line>",
            "reason": "starts with a byte order mark (U+FEFF): save it without one",
        }
    ]
    assert "Traceback" not in done.stderr and _stored(pg_url) == {}


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"])
def test_an_empty_file_is_one_line_naming_it(
    content: bytes, env: dict[str, str], pg_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_bytes(content)
    done = run(env, "submit", str(source))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {source}:1: <file>: no jobs: the file is empty or has only blank lines"
    ]
    assert _stored(pg_url) == {}


def test_line_separators_inside_strings_are_text_and_skip_invalid_keeps_every_valid_line(
    env: dict[str, str], pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    texts = {"sep-1": "lost card\u2028please help", "sep-2": "two\u2029paragraphs", "sep-3": "next\u0085line"}
    lines = [
        json.dumps({"id": i, "kind": "support", "payload": {"text": t}}, ensure_ascii=False)
        for i, t in texts.items()
    ]
    lines.insert(2, '{"kind": "support", "payload": {"text": "x"}, "metadata": {"priority": 12}}')
    source = tmp_path / "separators.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    refused = run(env, "submit", str(source), "--json")
    assert refused.returncode == 2
    assert [issue["line"] for issue in json.loads(refused.stdout)["rejected"]] == [3]
    assert _stored(pg_url) == {}

    done = run(env, "submit", str(source), "--json", "--skip-invalid", check=True)
    report = json.loads(done.stdout)
    assert (report["accepted"], [issue["line"] for issue in report["rejected"]]) == (3, [3])
    assert _stored(pg_url) == texts and _queued(redis_url) == 3


def test_an_id_repeated_within_the_batch_refuses_it_or_keeps_the_first_line(
    env: dict[str, str], pg_url: str, tmp_path: Path
) -> None:
    jobs = [
        {"id": "rep-1", "kind": "prompt", "payload": {"prompt": "first"}},
        {"id": "rep-2", "kind": "prompt", "payload": {"prompt": "other"}},
        {"id": "rep-1", "kind": "prompt", "payload": {"prompt": "again"}},
    ]
    source = write_jobs(tmp_path / "repeated.jsonl", jobs)
    refused = run(env, "submit", str(source))
    assert refused.returncode == 2 and f"{source}:3: id: duplicate of the job on line 1" in refused.stderr
    assert _stored(pg_url) == {}
    done = json.loads(run(env, "submit", str(source), "--json", "--skip-invalid", check=True).stdout)
    assert done["accepted"] == 2 and _stored(pg_url) == {"rep-1": "first", "rep-2": "other"}
    assert done["batch_id"] == batch_id_for(["rep-1", "rep-2"])


def test_skip_invalid_leaves_out_an_id_reused_for_other_content(
    env: dict[str, str], pg_url: str, tmp_path: Path
) -> None:
    run(
        env,
        "submit",
        str(write_jobs(tmp_path / "a.jsonl", [{"id": "c-1", "kind": "prompt", "payload": {"prompt": "a"}}])),
        check=True,
    )
    changed = [
        {"id": "c-1", "kind": "prompt", "payload": {"prompt": "changed"}},
        {"id": "c-2", "kind": "prompt", "payload": {"prompt": "new"}},
    ]
    done = json.loads(
        run(
            env,
            "submit",
            str(write_jobs(tmp_path / "b.jsonl", changed)),
            "--json",
            "--skip-invalid",
            check=True,
        ).stdout
    )
    assert done["rejected"] == [
        {"line": 1, "field": "id", "reason": "job c-1 already exists with other content"}
    ]
    assert done["accepted"] == 1 and _stored(pg_url) == {"c-1": "a", "c-2": "new"}


def test_a_batch_past_one_statements_parameters_is_stored_and_enqueued_once(
    env: dict[str, str], pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    jobs = [
        {"id": f"big-{n}", "kind": "prompt", "payload": {"prompt": f"What is {n} + 1?"}}
        for n in range(12_000)
    ]
    source = write_jobs(tmp_path / "big.jsonl", jobs)
    first = json.loads(run(env, "submit", str(source), "--json", check=True).stdout)
    assert (first["accepted"], first["duplicates"]) == (12_000, 0)
    assert first["batch_id"] == batch_id_for([job["id"] for job in jobs])  # the in-memory path's batch id
    assert _queued(redis_url) == 12_000
    second = json.loads(run(env, "submit", str(source), "--json", check=True).stdout)
    assert (second["batch_id"], second["accepted"], second["duplicates"]) == (first["batch_id"], 0, 12_000)
    assert _queued(redis_url) == 12_000
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Job)).scalar_one() == 12_000
    engine.dispose()


def test_a_batched_classify_message_is_the_one_send_classify_sends(make_app, client: redis.Redis) -> None:
    from tierflow.tasks.dispatch import send_classify, send_classify_many

    app, _ = make_app()
    send_classify(app, "one-by-one")
    assert send_classify_many(app, ["batched"]) == 1
    single, batched = (json.loads(client.lindex("classify", index) or b"{}") for index in (1, 0))
    bodies = [json.loads(base64.b64decode(message["body"])) for message in (single, batched)]
    assert bodies[0][0] == ["one-by-one"] and bodies[1][0] == ["batched"] and bodies[0][1:] == bodies[1][1:]
    assert all(isinstance(m["headers"][SENT_HEADER], float) for m in (single, batched)), (
        "stamped for the leases"
    )
    for message in (single, batched):
        for volatile in ("id", "root_id", "argsrepr", "ignore_result", SENT_HEADER):
            message["headers"].pop(volatile)
        for volatile in ("correlation_id", "delivery_tag", "reply_to"):
            message["properties"].pop(volatile)
        message.pop("body")
    assert batched == single
    assert json.loads(client.lindex("classify", 0) or b"{}")["headers"]["argsrepr"] == "('batched',)"
