"""Large batches on the bulk path (staged COPY, one INSERT, classify messages many per LPUSH), against
the real PostgreSQL and Redis: all or nothing, once only, in line order, and no job recorded as
waiting from before its message left, even when its publish comes late or never."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, func, select

from tests.integration.conftest import run, running_worker, wait_terminal, write_jobs
from tierflow.store.db import transaction
from tierflow.store.models import Job
from tierflow.tasks import submission
from tierflow.tasks.leases import SENT_HEADER
from tierflow.tasks.submission import submit_file


def _jobs(count: int, prefix: str = "bulk") -> list[dict[str, object]]:
    return [
        {"id": f"{prefix}-{n}", "kind": "support", "payload": {"text": f"My card {n} was declined, why?"}}
        for n in range(count)
    ]


def _messages(client: redis.Redis) -> list[tuple[str, float]]:
    """(job id, publish time) of every classify message, in the order workers take them."""
    out = []
    for raw in reversed(client.lrange("classify", 0, -1)):  # LPUSH at the head, workers pop the tail
        message = json.loads(raw)
        out.append((json.loads(base64.b64decode(message["body"]))[0][0], message["headers"][SENT_HEADER]))
    return out


def _sent_at(runtime) -> dict[str, float]:
    with transaction(runtime.sessions) as session:
        rows = session.execute(select(Job.id, Job.sent_at)).all()
    return {job_id: (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() for job_id, at in rows}


def test_a_bad_line_at_line_90001_of_100000_stores_and_enqueues_nothing(
    env: dict[str, str], pg_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    jobs = _jobs(100_000)
    jobs[90_000]["payload"] = {"text": 7}
    source = write_jobs(tmp_path / "big.jsonl", jobs)
    done = run(env, "submit", str(source))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[0].startswith(f"{source}:90001: payload.text: ")
    assert "nothing was stored" in done.stderr
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Job)).scalar_one() == 0
    engine.dispose()
    assert client.llen("classify") == 0


def test_a_bulk_batch_is_sent_once_in_line_order_and_resubmitting_it_sends_nothing(
    make_app, client: redis.Redis, tmp_path: Path
) -> None:
    app, runtime = make_app()
    source = write_jobs(tmp_path / "bulk.jsonl", _jobs(12_000))
    first = submit_file(app, runtime, source)
    assert (first.accepted, first.duplicates) == (12_000, 0)
    messages = _messages(client)
    assert [job_id for job_id, _ in messages] == [f"bulk-{n}" for n in range(12_000)]
    sent_at = _sent_at(runtime)
    # A job waits on its message from no earlier than its publish (routing.recovery relies on it),
    # and from no later than one lease after (a lost message is still found within a lease).
    assert all(
        published <= sent_at[job_id] <= published + runtime.settings.lease_s for job_id, published in messages
    )
    again = submit_file(app, runtime, source)
    assert (again.batch_id, again.accepted, again.duplicates) == (first.batch_id, 0, 12_000)
    assert client.llen("classify") == 12_000
    assert _sent_at(runtime) == sent_at, "a resubmission changes none of the stored jobs"


def test_a_slice_published_past_its_allowance_is_marked_at_its_publish(
    make_app, client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, runtime = make_app()
    monkeypatch.setattr(submission, "publish_allowance", lambda jobs, staging_s, lease_s: timedelta(hours=-1))
    report = submit_file(app, runtime, write_jobs(tmp_path / "late.jsonl", _jobs(6_000, "late")))
    assert report.accepted == 6_000
    sent_at = _sent_at(runtime)
    assert all(sent_at[job_id] >= published for job_id, published in _messages(client))


def test_jobs_stored_whose_messages_were_never_sent_are_sent_by_the_reconciler(
    make_app, client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, runtime = make_app(lease_s=1.0)

    def crash(app: object, job_ids: object) -> int:
        raise KeyboardInterrupt  # the process dies between the commit and the first publish

    monkeypatch.setattr(submission, "send_classify_many", crash)
    with pytest.raises(KeyboardInterrupt):
        submit_file(app, runtime, write_jobs(tmp_path / "crash.jsonl", _jobs(30, "crash")))
    monkeypatch.undo()
    assert client.llen("classify") == 0
    with transaction(runtime.sessions) as session:
        batch_id = session.execute(select(Job.batch_id).limit(1)).scalar_one()
        assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 30
    with running_worker(app):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            app.send_task("tierflow.reconcile", queue="maintenance")
            with transaction(runtime.sessions) as session:
                queued = session.execute(
                    select(func.count()).select_from(Job).where(Job.state == "queued")
                ).scalar_one()
            if not queued:
                break
            time.sleep(1.0)
        wait_terminal(runtime, batch_id)
    with transaction(runtime.sessions) as session:
        states = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        redeliveries = session.execute(select(func.min(Job.redeliveries))).scalar_one()
    assert dict(states) == {"succeeded": 30} and redeliveries == 1
