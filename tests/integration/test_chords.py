"""An attempt's chord as tasks/chords.py publishes it: Celery's own chord messages, on Redis and
on RabbitMQ, judged once with every expert's row."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import redis
from sqlalchemy import func, select

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, ExpertResult, Result
from tierflow.tasks.attempts import fan_out
from tierflow.tasks.submission import submit_file


def _tickets(prefix: str) -> list[dict[str, object]]:
    text = "My order {} arrived broken, can I get a refund?"
    return [{"id": f"{prefix}-{n}", "kind": "support", "payload": {"text": text.format(n)}} for n in range(6)]


def _rows_per_job(runtime, model):
    with transaction(runtime.sessions) as session:
        rows = session.execute(select(model.job_id, func.count()).group_by(model.job_id)).all()
    return dict(rows)


def _judged_once_with_every_row(runtime, tickets) -> None:
    ids = [t["id"] for t in tickets]
    with transaction(runtime.sessions) as session:
        attempts = session.execute(select(Attempt).where(Attempt.job_id.in_(ids))).scalars().all()
    assert attempts and all(a.state == "judged" and a.verdict for a in attempts)
    experts = _rows_per_job(runtime, ExpertResult)
    for job_id in {a.job_id for a in attempts}:
        mine = [a for a in attempts if a.job_id == job_id]
        assert experts[job_id] == sum(len(a.decision["experts"]) for a in mine), job_id
    assert {job_id: n for job_id, n in _rows_per_job(runtime, Result).items() if job_id in ids} == {
        job_id: 1 for job_id in ids
    }


def test_a_chord_on_redis_is_celerys_own_messages_and_is_judged_once(make_app, redis_url):
    app, runtime = make_app()
    context = {"kind": "support", "payload": {"text": "hello"}, "models": ["local-small"], "specialist": None}
    client = redis.Redis.from_url(redis_url)
    client.delete("tier.small")
    fan_out(app, "no-such-job", 1, "small", ["drafter", "retriever"], context)
    messages = [json.loads(raw) for raw in reversed(client.lrange("tier.small", 0, -1))]
    client.delete("tier.small")  # a job that is not stored: nothing runs it
    assert [m["headers"]["task"] for m in messages] == ["tierflow.expert", "tierflow.expert"]
    groups = {m["headers"]["group"] for m in messages}
    assert len(groups) == 1 and None not in groups
    assert [m["headers"]["group_index"] for m in messages] == [0, 1]
    # Redis joins what each part pushes: no part stores its result, and no one subscribes to one
    assert [m["headers"]["ignore_result"] for m in messages] == [True, True]
    assert client.pubsub_channels("*celery-task-meta-*") == []
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    assert [body[0][2] for body in bodies] == ["drafter", "retriever"]
    chord = bodies[0][2]["chord"]
    assert chord["task"] == "tierflow.aggregate" and chord["args"] == ["no-such-job", 1]
    assert chord["options"]["group_id"] in groups and chord["options"]["queue"] == "tier.small"
    assert chord["options"]["link_error"][0]["task"] == "tierflow.attempt_failed"
    size = app.backend.client.get(app.backend.get_key_for_group(groups.pop(), ".s"))
    assert int(size) == 2  # what every expert's on_chord_part_return counts against


def test_jobs_run_through_published_chords_on_redis(make_app, redis_url, tmp_path: Path):
    app, runtime = make_app()
    tickets = _tickets("chord-redis")
    client = redis.Redis.from_url(redis_url)
    stored_before = set(client.scan_iter("*celery-task-meta-*"))
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", tickets))
        wait_terminal(runtime, report.batch_id)
    _judged_once_with_every_row(runtime, tickets)
    # the experts' returns reached the aggregate through the chord alone
    assert set(client.scan_iter("*celery-task-meta-*")) - stored_before == set()


def test_jobs_run_through_published_chords_on_rabbitmq(make_app, amqp_url, redis_url, tmp_path: Path):
    app, runtime = make_app(broker_url=amqp_url, resilience_redis_url=redis_url)
    tickets = _tickets("chord-amqp")
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", tickets))
        wait_terminal(runtime, report.batch_id)
    _judged_once_with_every_row(runtime, tickets)
