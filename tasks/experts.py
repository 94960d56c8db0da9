"""expert (queue `tier.<tier>`): one expert of an attempt; its result goes to the store.

The task returns only a small marker: the aggregate reads the results from the
store, so a redelivered expert cannot corrupt the chord.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from providers.base import CompletionRequest, ModelRef
from routing.errors import ProviderError
from routing.experts import Expert, UnparseableOutput, expert_for
from routing.jobs import JobKind
from store.db import transaction
from store.lifecycle import JobView, has_expert_result, load_attempt, load_job, upsert_expert_result
from tasks.runtime import Runtime, runtime_for

log = logging.getLogger(__name__)


@shared_task(name="tierflow.expert", bind=True)
def expert(self: Any, job_id: str, attempt: int, name: str) -> dict[str, Any]:
    runtime = runtime_for(self.app)
    with transaction(runtime.sessions) as session:
        if has_expert_result(session, job_id, attempt, name):
            return {"expert": name, "ok": True, "reused": True}
        job = load_job(session, job_id)
        current = load_attempt(session, job_id, attempt)
    if job is None or current is None:
        return {"expert": name, "ok": False, "reused": False}
    row = run_expert(runtime, job, name, current.decision["models"])
    row.update(job_id=job_id, attempt=attempt, expert=name)
    with transaction(runtime.sessions) as session:
        upsert_expert_result(session, row)
    return {"expert": name, "ok": row["error"] is None, "reused": False}


def run_expert(runtime: Runtime, job: JobView, name: str, models: list[str]) -> dict[str, Any]:
    """Run a rule expert, or call the tier's models in order until one answers usably."""
    definition = expert_for(JobKind(job.kind), name)
    if definition.rule is not None:
        started = time.perf_counter()
        result = definition.rule(job.payload, runtime.policy())
        return {
            "output": result.output,
            "confidence": result.confidence,
            "error": None,
            "latency_s": time.perf_counter() - started,
        }
    return _call_models(runtime, job, definition, models)


def _call_models(runtime: Runtime, job: JobView, definition: Expert, models: list[str]) -> dict[str, Any]:
    assert definition.prompt is not None and definition.parse is not None
    prompt = definition.prompt(job.payload)
    request = CompletionRequest(system=prompt.system, user=prompt.user, max_tokens=prompt.max_tokens)
    errors: list[str] = []
    spent = {"cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0, "latency_s": 0.0}
    for ref in models:
        model = ModelRef.parse(ref)
        provider = runtime.providers.get(model.provider)
        if provider is None:
            errors.append(f"{ref}: provider not configured")
            continue
        try:
            completion = provider.complete(model.model, request)
        except ProviderError as exc:
            errors.append(str(exc))
            continue
        spent = {k: spent[k] + getattr(completion, k) for k in spent}
        try:
            parsed = definition.parse(completion.text)
        except UnparseableOutput as exc:
            errors.append(f"{ref}: {exc}")
            continue
        return {
            "provider": model.provider,
            "model": model.model,
            "output": parsed.output,
            "confidence": parsed.confidence,
            "error": None,
            **spent,
        }
    return {
        "provider": None,
        "model": None,
        "output": None,
        "confidence": None,
        "error": "; ".join(errors) or "no models",
        **spent,
    }
