"""run_job (queue `tier.<tier>`): one attempt of a job as one flat chord of experts.

classify and the aggregate fan their attempts out themselves (`fan_out`); run_job is what
recovery sends for an attempt whose chord was lost, and what an earlier release sent."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import chord, group, shared_task
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from tierflow.routing.decision import Strategy
from tierflow.routing.states import JobState
from tierflow.store.db import transaction
from tierflow.store.families import ended_children
from tierflow.store.lifecycle import load_job_attempt, move_job, start_attempt, touch_job
from tierflow.tasks.chords import send_chord
from tierflow.tasks.families import Fanout, merge_context
from tierflow.tasks.runtime import runtime_for
from tierflow.tasks.search import search_context

log = logging.getLogger(__name__)


@shared_task(name="tierflow.run_job", bind=True, ignore_result=True)
def run_job(self: Any, job_id: str, attempt: int) -> None:
    runtime = runtime_for(self.app)
    with transaction(runtime.sessions) as session:
        job, current = load_job_attempt(session, job_id, attempt)
        queue = (self.request.delivery_info or {}).get("routing_key")
        if (
            current is None
            or job is None
            or job.state is JobState.DECOMPOSED  # its merge starts when its last child ends
            or not start_attempt(session, job_id, attempt, queue, self.request.hostname)
        ):
            log.info("run_job: attempt %s of %s is gone, judged or waiting; nothing to do", attempt, job_id)
            return
        moved = move_job(session, job_id, JobState.RUNNING, runtime.stage_timeout)
        if not moved:
            touch_job(session, job_id, runtime.stage_timeout)
        # What every expert needs, read once here: an expert then reads nothing.
        if current.decision.get("strategy") == Strategy.MERGE.value and job.kind in runtime.kinds:
            kind = runtime.kinds.get(job.kind)
            context = merge_context(kind, job, current.decision, ended_children(session, job_id))
        else:
            context = expert_context(job.kind, job.payload, current.decision)
    fan_out(self.app, job_id, attempt, current.tier, current.decision["experts"], context)


def expert_context(kind: str, payload: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """What an attempt's experts need of its job and decision: kind, payload, models, specialist,
    and for a strategy search's step, its retrieval and what earlier steps learned."""
    return {
        "kind": kind,
        "payload": payload,
        "models": decision["models"],
        "specialist": decision.get("specialist"),
        **search_context(decision),
    }


def fan_out(
    app: Any, job_id: str, attempt: int, tier: str, experts: list[str], context: dict[str, Any]
) -> None:
    """Send the attempt's chord: its experts on the tier's queue, then the aggregate (and, if the
    chord fails, attempt_failed). Called after the commit that marked the attempt running."""
    queue = f"tier.{tier}"
    # the context's repr is short-circuited: Celery would write the whole payload into each
    # message's headers (argsrepr) for the logs and Flower, at a cost per expert
    shown = f"({job_id!r}, {attempt}, {{name!r}}, <context of {context.get('kind')}>)"
    header = [((job_id, attempt, name, context), shown.format(name=name)) for name in experts]
    if app.backend.supports_native_join:  # the chord counted in the result backend (Redis)
        try:
            send_chord(app, queue, "tierflow.expert", header, _aggregate(app, job_id, attempt, queue))
            return
        except (KombuError, OSError, RedisError) as exc:
            log.warning("the chord of attempt %s of %s: %s; sending it through Celery", attempt, job_id, exc)
    tasks = (app.signature("tierflow.expert", args=a, queue=queue, argsrepr=r) for a, r in header)
    chord(group(tasks))(_aggregate(app, job_id, attempt, queue))


def _aggregate(app: Any, job_id: str, attempt: int, queue: str) -> Any:
    """The attempt's chord callback, with attempt_failed as its errback."""
    callback = app.signature("tierflow.aggregate", args=(job_id, attempt), queue=queue)
    callback.on_error(app.signature("tierflow.attempt_failed", args=(job_id, attempt), queue=queue))
    return callback


def send_fanouts(app: Any, fanouts: Iterable[Fanout]) -> None:
    """Send each attempt a transaction created running (attempt 1, a model merge)."""
    for f in fanouts:
        fan_out(app, f.job_id, f.attempt, f.tier, f.experts, f.context)
