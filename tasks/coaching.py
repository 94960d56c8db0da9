"""The routing coach inside a reflect run: ask the configured model, review, record.

Runs only when the policy's learning names a `coach_model`, the run is not a
rollback, and the active version has judged enough jobs. Its proposal is
reviewed by `routing.coach.review_proposal` (allowed fields, bounds, step) and
what was applied or refused is recorded in the version's statistics. A coach
that fails or answers nonsense changes nothing; the reflect run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from tierflow.providers.structured import complete_structured
from tierflow.routing.analysis import job_text
from tierflow.routing.coach import CoachProposal, Failure, coach_prompt, coached, review_proposal
from tierflow.routing.errors import ProviderError
from tierflow.routing.experts import parse_answer
from tierflow.routing.kinds.registry import KindRegistry
from tierflow.routing.policy import Policy
from tierflow.routing.reflect import Reflection
from tierflow.store.outcomes import JudgedAttempt
from tierflow.tasks.experts import call_tier, request_for
from tierflow.tasks.runtime import Runtime

log = logging.getLogger(__name__)


def recent_failures(records: list[JudgedAttempt], kinds: KindRegistry) -> list[Failure]:
    """The latest attempts of the kinds in force that were not good, newest last."""
    failures = []
    for record in records:
        if not record.good and record.kind in kinds:
            text = job_text(kinds.get(record.kind), record.payload)
            failures.append(Failure(record.kind, record.tier, record.verdict, text))
    return failures


def coach_reflection(
    runtime: Runtime, policy: Policy, reflection: Reflection, records: list[JudgedAttempt]
) -> Reflection:
    """`reflection` with the coach's reviewed changes applied on top, and its record in the statistics."""
    model = policy.learning.coach_model
    jobs = int(reflection.statistics.get("version", {}).get("jobs", 0))
    failures = recent_failures(records, runtime.kinds)
    if model is None or reflection.rollback_to is not None or not failures:
        return reflection
    if jobs < policy.learning.min_version_samples:
        return reflection
    base = reflection.policy or policy
    prompt = coach_prompt(base, failures[-20:], reflection.statistics.get("tiers", {}))
    calls: list[dict[str, Any]] = []
    try:
        _, answer = complete_structured(
            lambda request: call_tier(runtime, [model], request, calls),
            request_for(prompt, runtime),
            lambda text: parse_answer(CoachProposal, text),
        )
    except ProviderError as exc:
        log.warning("the routing coach %s failed: %s", model, exc)
        return reflection
    proposal = CoachProposal.model_validate({**answer.output, "confidence": answer.confidence})
    overrides, record = review_proposal(base, proposal)
    statistics = {
        **reflection.statistics,
        "coach": {
            "model": model,
            "summary": proposal.summary,
            "changes": record,
            "cost_usd": round(sum(call["cost_usd"] for call in calls), 8),
        },
    }
    applied = [f"{c['field']} {c['from']} -> {c['to']}" for c in record if c["outcome"].startswith("applied")]
    refused = [f"{c['field']} ({c['outcome']})" for c in record if not c["outcome"].startswith("applied")]
    text = f"{reflection.text} The coach ({model}) said: {proposal.summary}."
    if applied:
        text += " Applied: " + "; ".join(applied) + "."
    if refused:
        text += " Refused: " + "; ".join(refused) + "."
    new = coached(base, overrides) if overrides else reflection.policy
    return replace(reflection, policy=new, statistics=statistics, text=text)
