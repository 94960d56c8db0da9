"""expert (queue `tier.<tier>`): one expert of an attempt; its result goes to the store.

The task returns only a small marker: the aggregate reads the results from the
store, so a redelivered expert cannot corrupt the chord. Every model call the
expert made (retries and fallbacks included) is recorded with its outcome, tokens,
cost and latency.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from providers.base import Completion, CompletionRequest, ModelRef
from providers.structured import complete_structured
from routing.errors import ProviderError, TierUnavailable
from routing.experts import Expert, ExpertOutput, expert_for, parse_answer
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
    """Run a rule expert, or ask the tier's models with structured output."""
    definition = expert_for(JobKind(job.kind), name)
    if definition.rule is not None:
        started = time.perf_counter()
        result = definition.rule(job.payload, runtime.policy())
        return {
            "output": result.output,
            "confidence": result.confidence,
            "error": None,
            "latency_s": time.perf_counter() - started,
            "calls": [],
        }
    return _ask_models(runtime, job, definition, models)


def _ask_models(runtime: Runtime, job: JobView, definition: Expert, models: list[str]) -> dict[str, Any]:
    assert definition.prompt is not None
    prompt = definition.prompt(job.payload)
    request = CompletionRequest(
        system=prompt.system,
        user=prompt.user,
        max_tokens=prompt.max_tokens,
        json_schema=prompt.schema.model_json_schema(),
    )
    calls: list[dict[str, Any]] = []
    try:
        completion, answer = complete_structured(
            lambda req: call_tier(runtime, models, req, calls),
            request,
            lambda text: parse_answer(prompt.schema, text),
        )
    except ProviderError as exc:
        return {
            "provider": None,
            "model": None,
            "output": None,
            "confidence": None,
            "error": str(exc),
            **_spend(calls),
        }
    return _answered(completion, answer, calls)


def _answered(completion: Completion, answer: ExpertOutput, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "provider": completion.provider,
        "model": completion.model,
        "output": answer.output,
        "confidence": answer.confidence,
        "error": None,
        **_spend(calls),
    }


def _spend(calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cost_usd": sum(c["cost_usd"] for c in calls),
        "input_tokens": sum(c["input_tokens"] for c in calls),
        "output_tokens": sum(c["output_tokens"] for c in calls),
        "latency_s": sum(c["latency_s"] for c in calls),
        "calls": calls,
    }


def call_tier(
    runtime: Runtime, models: list[str], request: CompletionRequest, calls: list[dict[str, Any]]
) -> Completion:
    """The tier's models in order until one answers; every call is appended to `calls`."""
    reasons = []
    for ref in models:
        model = ModelRef.parse(ref)
        provider = runtime.providers[model.provider]
        started = time.perf_counter()
        try:
            completion = provider.complete(model.model, request)
        except ProviderError as exc:
            calls.append(_call(ref, type(exc).__name__, 0, 0, 0.0, time.perf_counter() - started))
            reasons.append(f"{ref}: {exc.reason}")
            continue
        calls.append(
            _call(
                ref,
                "ok",
                completion.input_tokens,
                completion.output_tokens,
                completion.cost_usd,
                completion.latency_s,
            )
        )
        return completion
    raise TierUnavailable("tier", "+".join(models), "; ".join(reasons) or "no models")


def _call(
    ref: str, outcome: str, input_tokens: int, output_tokens: int, cost: float, latency: float
) -> dict[str, Any]:
    return {
        "model": ref,
        "outcome": outcome,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost,
        "latency_s": round(latency, 6),
    }
