"""expert (queue `tier.<tier>`): one expert of an attempt; its result goes to the store.

The task writes nothing: its result row (output, confidence, error, and every model
call it made, retries and fallbacks included, with outcome, tokens, cost and latency)
is its chord result, and the aggregate writes all of an attempt's rows at once, in the
transaction that claims and judges the attempt, so a redelivered expert or a second
chord can never write a row twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from kombu.utils.json import dumps

from tierflow.providers.base import Completion, CompletionRequest
from tierflow.providers.structured import complete_structured
from tierflow.routing.analysis import job_text
from tierflow.routing.errors import ProviderError, ProviderRateLimited
from tierflow.routing.experts import ExpertOutput, Prompt
from tierflow.routing.kinds.prompts import expert_prompt
from tierflow.routing.kinds.spec import ExpertSpec, ExpertType, KindSpec
from tierflow.store.db import transaction
from tierflow.store.lifecycle import load_job_attempt
from tierflow.tasks.attempts import expert_context
from tierflow.tasks.runtime import Runtime, runtime_for

log = logging.getLogger(__name__)


# A tier at its rate limit is retried later, at most RATE_LIMIT_RETRIES times; after that the
# chord fails and the attempt is judged as failed (escalation to the next tier).
RATE_LIMIT_RETRIES = 20


@shared_task(name="tierflow.expert", bind=True, max_retries=RATE_LIMIT_RETRIES)
def expert(
    self: Any, job_id: str, attempt: int, name: str, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One expert of an attempt; its result row travels in the chord to the aggregate, which
    writes every expert's row in the transaction that judges the attempt.

    `context` is what run_job read for it (the job's kind and payload, the tier's models): a
    first delivery reads nothing and writes nothing. A redelivered expert (its worker died)
    first looks whether the attempt is judged already, so that it does not call a model for
    nothing; without a context (a message from before contexts) it reads the job."""
    runtime = runtime_for(self.app)
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    if context is None or redelivered:
        with transaction(runtime.sessions) as session:
            job, current = load_job_attempt(session, job_id, attempt)
        if job is None or current is None or current.state == "judged":
            gone = "the attempt is judged" if current is not None and job is not None else "no such attempt"
            return {"expert": name, "ok": False, "row": None, "skipped": gone}
        context = expert_context(job.kind, job.payload, current.decision)
    try:
        row = run_expert(
            runtime,
            context["kind"],
            context["payload"],
            name,
            context["models"],
            context.get("specialist"),
            context.get("search"),
        )
    except TierRateLimited as exc:
        # The whole tier is at its cluster-wide limit: come back later instead of holding a slot.
        raise self.retry(exc=exc.error, countdown=exc.error.retry_after or 1.0) from None
    row.update(job_id=job_id, attempt=attempt, expert=name)
    # the row as one JSON text: Celery reprs every return value for its events and logs, and
    # walks a dict for that in Python; a text it cuts. The aggregate decodes it (chord_rows).
    return {"expert": name, "ok": row["error"] is None, "row": dumps(row)}


def _local(output: dict[str, Any], confidence: float, started: float) -> dict[str, Any]:
    return {
        "output": output,
        "confidence": confidence,
        "error": None,
        "latency_s": time.perf_counter() - started,
        "calls": [],
    }


def run_expert(
    runtime: Runtime,
    kind_name: str,
    payload: dict[str, Any],
    name: str,
    models: list[str],
    specialist: str | None = None,
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run an expert by its type: search the knowledge base, run a rule, or ask the tier's models
    with structured output; as the kind's `specialist` runs it when one is named (its knowledge
    sections, its instruction), and as a strategy search's step when `search` is given (whether
    it reads the knowledge base, what earlier steps learned: tasks/search.py search_context).
    A job of a kind (or an expert) no longer declared fails the expert."""
    kind = runtime.kinds.get(kind_name) if kind_name in runtime.kinds else None
    definition = kind.expert(name) if kind is not None else None
    if kind is None or definition is None:
        what = f"kind {kind_name!r}" if kind is None else f"expert {name!r} of kind {kind_name!r}"
        error = f"{what} is not declared"
        return {
            "provider": None,
            "model": None,
            "output": None,
            "confidence": None,
            "error": error,
            **spend([]),
        }
    text = job_text(kind, payload)
    started = time.perf_counter()
    chosen = kind.specialist(specialist)
    sections = chosen.sections if chosen is not None else ()
    if definition.type is ExpertType.RETRIEVER:
        hits = runtime.knowledge(text, 3, sections)
        return _local({"articles": [hit.as_dict() for hit in hits]}, 1.0, started)
    if definition.type is ExpertType.RULE:
        assert definition.run is not None, "the registry resolves every rule expert's rule"
        result = definition.run(payload, text, runtime.policy(), definition.options)
        return _local(result.output, result.confidence, started)
    search = search or {}
    context: dict[str, Any] = {"draft": search["draft"]} if search.get("draft") else {}
    if chosen is not None and definition.name in chosen.instructions:
        context["instruction"] = chosen.instructions[definition.name]
    grounded = definition.grounded if search.get("retrieval") is None else bool(search["retrieval"])
    if grounded and search.get("articles"):  # what an earlier search step retrieved
        context["articles"] = search["articles"]
    elif grounded:
        context["articles"] = [hit.as_dict() for hit in runtime.knowledge(text, 2, sections)]
    return _ask_models(runtime, payload, kind, definition, models, context)


def _ask_models(
    runtime: Runtime,
    payload: dict[str, Any],
    kind: KindSpec,
    definition: ExpertSpec,
    models: list[str],
    context: dict[str, Any],
) -> dict[str, Any]:
    prompt = expert_prompt(kind, definition, payload, context)
    request = request_for(prompt, runtime)
    calls: list[dict[str, Any]] = []
    try:
        completion, answer = complete_structured(
            lambda req: call_tier(runtime, models, req, calls),
            request,
            prompt.parse,
        )
    except ProviderRateLimited as exc:
        if exc.provider == "tier":
            raise TierRateLimited(exc) from None
        return _failed(exc, calls)
    except ProviderError as exc:
        return _failed(exc, calls)
    return _answered(completion, answer, calls)


def request_for(prompt: Prompt, runtime: Runtime) -> CompletionRequest:
    """The provider request for an expert's prompt, its schema as structured output."""
    return CompletionRequest(
        system=prompt.system,
        user=prompt.user,
        max_tokens=prompt.max_tokens,
        timeout_s=runtime.settings.call_timeout_s,
        json_schema=prompt.json_schema(),
    )


class TierRateLimited(Exception):
    """Every model of the tier is at its rate limit; carries the provider error and its wait."""

    def __init__(self, error: ProviderRateLimited) -> None:
        super().__init__(str(error))
        self.error = error


def _failed(exc: ProviderError, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "provider": None,
        "model": None,
        "output": None,
        "confidence": None,
        "error": str(exc),
        **spend(calls),
    }


def _answered(completion: Completion, answer: ExpertOutput, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "provider": completion.provider,
        "model": completion.model,
        "output": answer.output,
        "confidence": answer.confidence,
        "error": None,
        **spend(calls),
    }


def spend(calls: list[dict[str, Any]]) -> dict[str, Any]:
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
    """The tier's models in order, through breakers, rate limits and retries; calls go to `calls`."""
    return runtime.tier_caller.complete(
        models, request, on_call=lambda record: calls.append(record.as_dict())
    )
