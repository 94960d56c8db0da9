"""classify (queue `classify`): analyse a queued job, decide its first tier, dispatch attempt 1."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from routing.analysis import analyze_rules
from routing.decision import Strategy, decide
from routing.jobs import JobKind
from routing.states import JobState
from store.db import transaction
from store.lifecycle import create_attempt, load_attempt, load_job, move_job
from tasks.aggregate import hold_for_review
from tasks.context import decision_context
from tasks.dispatch import send_attempt
from tasks.runtime import runtime_for

log = logging.getLogger(__name__)


@shared_task(name="tierflow.classify", bind=True, ignore_result=True)
def classify(self: Any, job_id: str) -> None:
    runtime = runtime_for(self.app)
    policy = runtime.policy()
    with transaction(runtime.sessions) as session:
        job = load_job(session, job_id)
        if job is None:
            log.warning("classify: no job %s", job_id)
            return
        if job.state is JobState.QUEUED:
            kind = JobKind(job.kind)
            analysis = analyze_rules(kind, job.payload)
            decision = decide(kind, analysis, policy, decision_context(session, runtime, policy, job))
            move_job(
                session,
                job_id,
                JobState.CLASSIFIED,
                runtime.stage_timeout,
                analysis=analysis.as_dict(),
                tier=decision.tier.value,
                attempt=1,
            )
            create_attempt(session, job_id, 1, decision.tier.value, decision.as_dict())
            if decision.strategy is Strategy.REVIEW:
                hold_for_review(session, job_id, 1, decision.tier, decision.reasons)
                return
        elif job.state is not JobState.CLASSIFIED:
            return  # already past classification: this is a stale redelivery
        attempt = load_attempt(session, job_id, 1)
    # A redelivered classify of a classified job sends attempt 1 again: run_job is idempotent,
    # and the first delivery may have died between its commit and its send.
    if attempt is not None:
        send_attempt(self.app, job_id, 1, attempt.tier)
