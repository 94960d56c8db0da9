"""The pipeline on the real PostgreSQL, Redis and a real Celery worker."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import redis
from celery import signals
from celery.utils import uuid
from sqlalchemy import func, select, update

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.routing.jobs import parse_lines
from tierflow.routing.states import JobState, Tier
from tierflow.store.db import transaction
from tierflow.store.lifecycle import create_attempt, move_job
from tierflow.store.models import Attempt, ExpertResult, Job, Result, utcnow
from tierflow.store.submit import store_batch
from tierflow.tasks.submission import submit_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EASY = {"kind": "support", "payload": {"text": "I forgot my password and cannot log in."}}


def _attempts(runtime, job_id):
    with transaction(runtime.sessions) as session:
        return (
            session.execute(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number))
            .scalars()
            .all()
        )


def _count(runtime, model, **where):
    with transaction(runtime.sessions) as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return session.execute(query).scalar_one()


def _stored_batch(runtime, tmp_path, jobs):
    """Jobs stored as queued with no message sent: a test sends what it needs."""
    parsed = parse_lines(write_jobs(tmp_path / "jobs.jsonl", jobs).read_text().splitlines())
    return store_batch(runtime.sessions, "test", parsed.jobs, utcnow())


def test_example_batch_flows_through_every_stage_to_one_result_per_job(make_app, tmp_path):
    app, runtime = make_app()
    lines = [
        line
        for name in ("support", "documents", "prompts")
        for line in (EXAMPLES / f"{name}.jsonl").read_text().splitlines()
        if line.strip()
    ]
    source = tmp_path / "examples.jsonl"
    source.write_text("\n".join(lines) + "\n")
    with running_worker(app):
        report = submit_file(app, runtime, source)
        assert report.accepted == len(lines) and not report.rejected
        wait_terminal(runtime, report.batch_id, timeout_s=120)
    with transaction(runtime.sessions) as session:
        jobs = session.execute(select(Job)).scalars().all()
        attempts = session.execute(select(Attempt)).scalars().all()
        experts = session.execute(select(ExpertResult)).scalars().all()
        results = session.execute(select(Result)).scalars().all()
    assert len(jobs) == len(lines)
    assert {r.job_id for r in results} == {j.id for j in jobs} and len(results) == len(jobs)
    stray = [
        (a.job_id, a.number, a.tier, a.state, a.queue)
        for a in attempts
        if a.state != "judged" or a.queue != f"tier.{a.tier}"
    ]
    assert stray == [], "every attempt judged, and run from its own tier's queue"
    assert len(experts) == sum(len(a.decision["experts"]) for a in attempts)
    states = {j.state for j in jobs}
    assert JobState.SUCCEEDED.value in states and JobState.NEEDS_REVIEW.value in states
    assert len(attempts) > len(jobs), "the examples include jobs that must escalate"
    assert sum(e.cost_usd for e in experts) > 0


def _failing_small(make_app, tmp_path, job_id, **settings):
    """An easy job run to the end with the small tier's model failing: the runtime and its attempts."""
    app, runtime = make_app(fake_failing_models=["fake:fake-small"], **settings)
    source = write_jobs(tmp_path / "easy.jsonl", [{"id": job_id, **EASY}])
    with running_worker(app):
        report = submit_file(app, runtime, source)
        wait_terminal(runtime, report.batch_id)
    return runtime, _attempts(runtime, job_id)


def test_failing_small_tier_escalates_to_the_medium_queue(make_app, tmp_path):
    runtime, (first, second) = _failing_small(make_app, tmp_path, "easy-1")
    assert (first.tier, first.queue, first.verdict) == ("small", "tier.small", "escalate")
    assert (second.tier, second.queue, second.verdict) == ("medium", "tier.medium", "accept")
    with transaction(runtime.sessions) as session:
        failed = session.execute(
            select(ExpertResult).where(ExpertResult.attempt == 1, ExpertResult.expert == "drafter")
        ).scalar_one()
        result = session.execute(select(Result).where(Result.job_id == "easy-1")).scalar_one()
    assert "injected failure" in failed.error
    assert (result.tier, result.verdict) == ("medium", "accept")


def test_a_two_tier_deployment_escalates_from_small_straight_to_large(make_app, tmp_path):
    tiers = {"small": ["fake:fake-small"], "large": ["fake:fake-large"]}
    runtime, (first, second) = _failing_small(make_app, tmp_path, "two-1", tiers=tiers)
    assert runtime.policy().ladder == (Tier.SMALL, Tier.LARGE)
    assert (first.tier, first.queue, first.verdict) == ("small", "tier.small", "escalate")
    assert (second.tier, second.queue, second.verdict) == ("large", "tier.large", "accept")


def test_duplicate_deliveries_leave_one_expert_result_and_one_result(make_app, tmp_path):
    app, runtime = make_app()
    stored = _stored_batch(runtime, tmp_path, [{"id": "dup-1", **EASY}])
    decision = {"experts": ["drafter", "policy_check"], "models": ["fake:fake-small"]}
    with transaction(runtime.sessions) as session:
        move_job(session, "dup-1", JobState.CLASSIFIED, tier="small", attempt=1)
        create_attempt(session, "dup-1", 1, "small", decision)
    for _ in range(2):  # the whole attempt delivered twice, and each expert once more on its own
        app.send_task("tierflow.run_job", args=("dup-1", 1), queue="tier.small")
        for name in decision["experts"]:
            app.send_task("tierflow.expert", args=("dup-1", 1, name), queue="tier.small")
    with running_worker(app):
        wait_terminal(runtime, stored.batch_id)
        time.sleep(1.0)  # let the duplicates finish too
        late = app.send_task("tierflow.expert", args=("dup-1", 1, "drafter"), queue="tier.small")
        assert late.get(timeout=30) | {"expert": None} == {
            "expert": None, "ok": False, "row": None, "skipped": "the attempt is judged"
        }  # fmt: skip
        judged: list[object] = []
        again_id = uuid()

        def note(sender=None, task_id=None, retval=None, **_):  # in this process's worker
            if task_id == again_id:
                judged.append(retval)

        signals.task_postrun.connect(note, weak=False)
        try:
            app.send_task("tierflow.aggregate", args=([], "dup-1", 1), queue="tier.small", task_id=again_id)
            deadline = time.monotonic() + 30
            while not judged and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            signals.task_postrun.disconnect(note)
        assert judged == [{"job_id": "dup-1", "attempt": 1, "verdict": None}]  # it judged nothing
    assert _count(runtime, ExpertResult, job_id="dup-1") == 2
    assert _count(runtime, Result, job_id="dup-1") == 1
    assert [a.verdict for a in _attempts(runtime, "dup-1")] == ["accept"]


def test_chord_failure_is_judged_and_escalated(make_app, tmp_path):
    app, runtime = make_app()
    stored = _stored_batch(runtime, tmp_path, [{"id": "boom-1", **EASY}])
    broken = {"experts": ["drafter", "no_such_expert"], "models": ["fake:fake-small"]}
    with transaction(runtime.sessions) as session:
        move_job(session, "boom-1", JobState.CLASSIFIED, tier="small", attempt=1)
        create_attempt(session, "boom-1", 1, "small", broken)
    with running_worker(app):
        app.send_task("tierflow.run_job", args=("boom-1", 1), queue="tier.small")
        wait_terminal(runtime, stored.batch_id)
    first, second = _attempts(runtime, "boom-1")
    assert first.verdict == "escalate" and "no_such_expert" in " ".join(first.reasons["reasons"])
    assert (second.tier, second.verdict) == ("medium", "accept")
    assert _count(runtime, Result, job_id="boom-1") == 1


def test_reconcile_requeues_a_job_whose_message_was_deleted(make_app, tmp_path, redis_url):
    app, runtime = make_app()
    report = submit_file(app, runtime, write_jobs(tmp_path / "lost.jsonl", [{"id": "lost-1", **EASY}]))
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen("classify") == 1
    broker.delete("classify")  # the broker lost the message
    with transaction(runtime.sessions) as session:  # ... longer than a lease ago
        session.execute(
            update(Job).values(sent_at=utcnow() - timedelta(seconds=runtime.settings.lease_s + 1))
        )
    with running_worker(app):
        time.sleep(0.5)
        assert _count(runtime, Job, state="queued") == 1, "without its message the job does not move"
        app.send_task("tierflow.reconcile", queue="maintenance")
        wait_terminal(runtime, report.batch_id)
    with transaction(runtime.sessions) as session:
        job = session.get(Job, "lost-1")
    assert job.state == "succeeded" and job.redeliveries == 1
    assert _count(runtime, Result, job_id="lost-1") == 1


def test_reconcile_retries_an_interrupted_attempt(make_app, tmp_path):
    app, runtime = make_app()
    stored = _stored_batch(runtime, tmp_path, [{"id": "cut-1", **EASY}])
    decision = {"experts": ["drafter", "policy_check"], "models": ["fake:fake-small"]}
    with transaction(runtime.sessions) as session:  # a worker died mid-attempt: running, no messages left
        move_job(session, "cut-1", JobState.CLASSIFIED, tier="small", attempt=1)
        create_attempt(session, "cut-1", 1, "small", decision)
        move_job(session, "cut-1", JobState.RUNNING)
        session.execute(update(Attempt).values(state="running"))
        session.execute(
            update(Job).values(sent_at=utcnow() - timedelta(seconds=runtime.settings.lease_s + 1))
        )
    with running_worker(app):
        app.send_task("tierflow.reconcile", queue="maintenance")
        wait_terminal(runtime, stored.batch_id)
    assert [a.verdict for a in _attempts(runtime, "cut-1")] == ["accept"]
    assert _count(runtime, Result, job_id="cut-1") == 1


def test_reconcile_gives_up_after_max_redeliveries_with_a_result(make_app, tmp_path):
    app, runtime = make_app(max_redeliveries=0)
    stored = _stored_batch(runtime, tmp_path, [{"id": "stuck-1", **EASY}])
    from tierflow.tasks.reconcile import requeue_stale

    # Stored and never sent: a minute later nobody holds it and its queue is empty.
    assert requeue_stale(app, runtime, utcnow() + timedelta(minutes=1)) == {
        "requeued": 0,
        "failed": 1,
        "waiting": 0,
    }
    with transaction(runtime.sessions) as session:
        job = session.get(Job, "stuck-1")
        result = session.execute(select(Result)).scalar_one()
    assert job.state == "failed" and "redeliveries" in job.error
    assert result.verdict == "fail" and stored.batch_id


def test_reconcile_lets_a_job_wait_while_its_queue_still_holds_messages(make_app, tmp_path, redis_url):
    app, runtime = make_app(stage_timeout_s=1.0)
    from tierflow.tasks.reconcile import requeue_stale

    report = submit_file(app, runtime, write_jobs(tmp_path / "backlog.jsonl", [{"id": "wait-1", **EASY}]))
    assert redis.Redis.from_url(redis_url).llen("classify") == 1, "no worker: the message waits in the queue"
    # An hour later, past its stage timeout, nobody holds it and no younger message left the queue.
    assert requeue_stale(app, runtime, utcnow() + timedelta(hours=1)) == {
        "requeued": 0,
        "failed": 0,
        "waiting": 1,
    }
    with transaction(runtime.sessions) as session:
        job = session.get(Job, "wait-1")
    assert job.redeliveries == 0, "it waits its turn"
    assert redis.Redis.from_url(redis_url).llen("classify") == 1 and report.batch_id


def test_a_job_that_moves_on_starts_its_resend_count_afresh(make_app, tmp_path):
    app, runtime = make_app()
    _stored_batch(runtime, tmp_path, [{"id": "moving-1", **EASY}])
    with transaction(runtime.sessions) as session:
        session.execute(update(Job).values(redeliveries=3, stalled_resends=3))
        assert move_job(session, "moving-1", JobState.CLASSIFIED, tier="small", attempt=1)
    with transaction(runtime.sessions) as session:
        job = session.get(Job, "moving-1")
    assert (job.redeliveries, job.stalled_resends) == (3, 0), "the total stays; the backoff starts again"
