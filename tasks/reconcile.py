"""reconcile (beat, queue `maintenance`): PostgreSQL is the source of truth.

Every non-terminal job is either held by a live worker (its lease, renewed by
the worker's beat) or waiting for a message in a queue. `routing.recovery` says
which of them lost their message (a killed worker, a flushed broker, a publish
that never happened) or made no progress: those are sent again from what the
store says. Every handler is idempotent, so a job that was merely slow costs a
duplicate message, never a duplicate result. A job sent again too many times
fails with a result that names the last cause.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task

from tierflow.routing.recovery import ClusterView, Recovery, RecoveryRules, recovery_for
from tierflow.routing.states import JobState
from tierflow.store.db import transaction
from tierflow.store.leases import as_unfinished, cluster_view, unfinished_jobs
from tierflow.store.lifecycle import last_expert_error, move_job, write_result
from tierflow.store.models import utcnow
from tierflow.tasks.attempts import send_fanouts
from tierflow.tasks.dispatch import queue_lengths, send_attempt, send_classify
from tierflow.tasks.families import Fanout, merge_when_ready, sweep_parents
from tierflow.tasks.runtime import Runtime, runtime_for
from tierflow.worker.app import ALL_QUEUES

log = logging.getLogger(__name__)

BATCH_LIMIT = 500


@shared_task(name="tierflow.reconcile", bind=True, ignore_result=True)
def reconcile(self: Any) -> dict[str, int]:
    return requeue_stale(self.app, runtime_for(self.app), utcnow())


def requeue_stale(app: Any, runtime: Runtime, now: datetime, everything: bool = False) -> dict[str, int]:
    """Send again every unfinished job that `recovery_for` finds lost; `everything`: every unfinished
    job, as when an embedded worker starts (its in-memory broker did not outlive the last process)."""
    settings = runtime.settings
    rules = RecoveryRules(settings.lease_s, settings.max_redeliveries)
    resend: list[tuple[str, str, int, str | None]] = []
    merges: list[Fanout] = []
    given_up = waiting = 0
    lengths = queue_lengths(app, ALL_QUEUES)
    with transaction(runtime.sessions) as session:
        view = cluster_view(session, now, lengths)
        if everything:
            view = ClusterView(now.timestamp(), frozenset(), {}, {q: 0 for q in ALL_QUEUES})
            rules = RecoveryRules(0.0, settings.max_redeliveries)
        for job in unfinished_jobs(session, view, 0.0 if everything else settings.lease_s, BATCH_LIMIT):
            action, cause = recovery_for(as_unfinished(job), view, rules)
            if action is Recovery.WAIT:
                waiting += 1
                continue
            if action is Recovery.GIVE_UP:
                ended = _give_up(session, job.id, job.attempt, job.tier, cause)
                given_up += ended
                merges += merge_when_ready(session, runtime, job.id, job.parent_id) if ended else []
                continue
            log.info("reconcile: sending %s again: %s", job.id, cause)
            job.redeliveries += 1
            job.stalled_resends += 1
            job.sent_at = utcnow()
            job.stale_after = job.sent_at + timedelta(seconds=settings.stage_timeout_s)
            resend.append((job.id, job.state, job.attempt, job.tier))
        merged = sweep_parents(session, runtime, BATCH_LIMIT)
    send_fanouts(app, (*merges, *merged))
    for job_id, state, attempt, tier in resend:
        if state == JobState.QUEUED.value or tier is None:
            send_classify(app, job_id)
        else:
            send_attempt(app, job_id, attempt, tier)
    if resend or given_up:
        log.warning("reconcile: re-enqueued %d jobs, gave up on %d", len(resend), given_up)
    return {"requeued": len(resend), "failed": given_up, "waiting": waiting}


def _give_up(session: Any, job_id: str, attempt: int, tier: str | None, cause: str) -> int:
    last_error = last_expert_error(session, job_id)
    reason = cause if last_error is None else f"{cause}; last error: {last_error}"
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
