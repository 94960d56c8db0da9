"""A tier at its cluster-wide rate limit: the expert task comes back later, it does not block or escalate."""

from __future__ import annotations

import threading

from celery.signals import task_retry
from sqlalchemy import select

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, Result
from tierflow.tasks.submission import submit_file

JOBS = [{"id": f"rl-{n}", "kind": "prompt", "payload": {"prompt": f"What is {n} + 1?"}} for n in range(14)]


def test_rate_limited_tier_retries_the_task_with_a_countdown(make_app, tmp_path):
    retries: list[float] = []
    lock = threading.Lock()

    def count(sender=None, request=None, reason=None, **_):  # type: ignore[no-untyped-def]
        if sender is not None and sender.name == "tierflow.expert":
            with lock:
                retries.append(getattr(reason, "when", 0) or 0)

    task_retry.connect(count, weak=False)
    try:
        app, runtime = make_app(rate_limits={"fake:fake-small": {"requests_per_minute": 12}})
        with running_worker(app):
            report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", JOBS))
            wait_terminal(runtime, report.batch_id, timeout_s=90)
    finally:
        task_retry.disconnect(count)
    with transaction(runtime.sessions) as session:
        attempts = session.execute(select(Attempt)).scalars().all()
        results = session.execute(select(Result)).scalars().all()
    assert len(results) == len(JOBS) and all(r.verdict == "accept" for r in results)
    assert {a.tier for a in attempts} == {"small"} and len(attempts) == len(JOBS), "nothing escalated"
    assert len(retries) >= 2, "the two jobs over the limit waited for capacity by retrying"
