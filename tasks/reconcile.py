"""reconcile (beat, queue `maintenance`): PostgreSQL is the source of truth.

A job in a non-terminal state whose stale deadline has passed has lost its
message (a killed worker, a flushed broker) or is stuck; it is sent again from
what the store says. Every handler is idempotent, so a job that was merely slow
costs a duplicate message, never a duplicate result. After `max_redeliveries`
the job fails with a result that says why.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task

from tierflow.routing.states import JobState
from tierflow.store.db import transaction
from tierflow.store.lifecycle import move_job, stale_jobs, write_result
from tierflow.store.models import utcnow
from tierflow.tasks.dispatch import queue_lengths, send_attempt, send_classify
from tierflow.tasks.runtime import Runtime, runtime_for
from tierflow.worker.app import ALL_QUEUES, CLASSIFY_QUEUE

log = logging.getLogger(__name__)

BATCH_LIMIT = 500


@shared_task(name="tierflow.reconcile", bind=True, ignore_result=True)
def reconcile(self: Any) -> dict[str, int]:
    return requeue_stale(self.app, runtime_for(self.app), utcnow())


def requeue_stale(app: Any, runtime: Runtime, now: datetime) -> dict[str, int]:
    """Re-send every non-terminal job whose stale deadline is before `now`.

    A job whose queue still holds messages may simply be waiting its turn behind a
    backlog: its deadline moves forward and nothing is re-sent. Only when its queue is
    empty can its message not be waiting there, and the job is sent again.
    """
    settings = runtime.settings
    lengths = queue_lengths(app, ALL_QUEUES)
    resend: list[tuple[str, str, int, str | None]] = []
    given_up = waiting = 0
    with transaction(runtime.sessions) as session:
        for job in stale_jobs(session, now, BATCH_LIMIT):
            queue = (
                CLASSIFY_QUEUE
                if job.state == JobState.QUEUED.value or job.tier is None
                else f"tier.{job.tier}"
            )
            if lengths.get(queue, 0) > 0:
                job.stale_after = utcnow() + timedelta(seconds=settings.stage_timeout_s)
                waiting += 1
                continue
            if job.redeliveries >= settings.max_redeliveries:
                given_up += _give_up(session, job.id, job.attempt, job.tier, job.redeliveries)
                continue
            backoff = settings.stage_timeout_s * 2 ** (job.redeliveries + 1)
            job.redeliveries += 1
            job.stale_after = utcnow() + timedelta(seconds=backoff)
            resend.append((job.id, job.state, job.attempt, job.tier))
    for job_id, state, attempt, tier in resend:
        if state == JobState.QUEUED.value or tier is None:
            send_classify(app, job_id)
        else:
            send_attempt(app, job_id, attempt, tier)
    if resend or given_up:
        log.warning("reconcile: re-enqueued %d stale jobs, gave up on %d", len(resend), given_up)
    return {"requeued": len(resend), "failed": given_up, "waiting": waiting}


def _give_up(session: Any, job_id: str, attempt: int, tier: str | None, redeliveries: int) -> int:
    reason = f"no progress after {redeliveries} redeliveries"
    if not move_job(session, job_id, JobState.FAILED, error=reason):
        return 0
    write_result(
        session,
        {
            "job_id": job_id,
            "attempt": attempt,
            "tier": tier or "none",
            "verdict": "fail",
            "quality": 0.0,
            "output": {"error": reason},
        },
    )
    return 1
