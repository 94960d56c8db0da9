"""run_job (queue `tier.<tier>`): one attempt of a job as one flat chord of experts."""

from __future__ import annotations

import logging
from typing import Any

from celery import chord, group, shared_task

from tierflow.routing.states import JobState
from tierflow.store.db import transaction
from tierflow.store.lifecycle import load_attempt, load_job, move_job, start_attempt, touch_job
from tierflow.tasks.runtime import runtime_for
from tierflow.tasks.search import expert_context

log = logging.getLogger(__name__)


@shared_task(name="tierflow.run_job", bind=True, ignore_result=True)
def run_job(self: Any, job_id: str, attempt: int) -> None:
    runtime = runtime_for(self.app)
    with transaction(runtime.sessions) as session:
        current = load_attempt(session, job_id, attempt)
        job = load_job(session, job_id)
        queue = (self.request.delivery_info or {}).get("routing_key")
        if (
            current is None
            or job is None
            or not start_attempt(session, job_id, attempt, queue, self.request.hostname)
        ):
            log.info("run_job: attempt %s of %s is gone or judged; nothing to do", attempt, job_id)
            return
        moved = move_job(session, job_id, JobState.RUNNING, runtime.stage_timeout)
        if not moved:
            touch_job(session, job_id, runtime.stage_timeout)
    # What every expert needs, read once here: on a first run an expert then reads nothing. An
    # attempt that was running already (a re-sent run_job) is a rerun: its experts look first.
    context = {
        "kind": job.kind,
        "payload": job.payload,
        "models": current.decision["models"],
        "rerun": current.state != "dispatched",
        **expert_context(current.decision),  # a search step: its retrieval and what it carries
    }
    queue = f"tier.{current.tier}"
    experts = group(
        self.app.signature("tierflow.expert", args=(job_id, attempt, name, context), queue=queue)
        for name in current.decision["experts"]
    )
    callback = self.app.signature("tierflow.aggregate", args=(job_id, attempt), queue=queue)
    callback.on_error(self.app.signature("tierflow.attempt_failed", args=(job_id, attempt), queue=queue))
    chord(experts)(callback)
