"""The strategy search's glue: the next step of a job's search as an attempt in the store.

routing/search.py decides; this module reads what the judged step learned from the store,
creates the next step's attempt (a model step is sent like an escalation, after the
commit), or ends the job with the search's clarify or review step. Called inside the
aggregate's (or classify's) transaction; it imports nothing of tasks/aggregate.py.
"""

from __future__ import annotations

from typing import Any

from tierflow.routing.analysis import Analysis, analyze_rules
from tierflow.routing.decision import Decision, Strategy
from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.kinds.spec import ExpertType, KindSpec
from tierflow.routing.policy import Policy
from tierflow.routing.search import SearchState, ending_verdict, learned, next_decision
from tierflow.routing.states import JobState, Tier
from tierflow.routing.verdict import Verdict, VerdictAction
from tierflow.store.lifecycle import (
    JobView,
    claim_attempt,
    create_attempt,
    move_job,
    record_verdict,
    write_result,
)
from tierflow.tasks.context import decision_context
from tierflow.tasks.runtime import Runtime

ENDED = {
    VerdictAction.NEEDS_CLARIFICATION: JobState.NEEDS_CLARIFICATION,
    VerdictAction.NEEDS_REVIEW: JobState.NEEDS_REVIEW,
}


def searching(decision: dict[str, Any], verdict: Verdict) -> bool:
    """Whether the judged attempt is a search step its search goes on from: it was judged
    uncertain, or its experts failed with a tier left above."""
    if not decision.get("search"):
        return False
    return verdict.uncertain or (verdict.action is VerdictAction.ESCALATE and verdict.next_tier is not None)


def search_context(decision: dict[str, Any]) -> dict[str, Any]:
    """What a search step's experts are given (tasks/experts.py): whether they read the knowledge
    base, and what the earlier steps learned; {} for an attempt that is no search step."""
    search = decision.get("search")
    if not search:
        return {}
    carried = search.get("carried", {})
    return {
        "search": {
            "retrieval": search.get("retrieval"),
            "articles": carried.get("articles", []),
            "draft": carried.get("draft"),
        }
    }


def search_on(
    session: Any,
    runtime: Runtime,
    policy: Policy,
    job: JobView,
    current: tuple[int, Tier, dict[str, Any]],
    verdict: Verdict,
    outcomes: list[ExpertOutcome],
) -> tuple[Verdict, Decision | None]:
    """The judged attempt's search goes on: the next step's attempt is created running (its
    decision is returned, fanned out after the commit), or the job ends with the search's last
    step (None).
    The judged attempt's verdict says where the search went and why."""
    attempt, tier, decision = current
    kind = runtime.kinds.get(job.kind)
    analysis = Analysis.from_dict(job.analysis) if job.analysis else analyze_rules(kind, job.payload)
    state = learned(SearchState.from_dict(decision["search"]), verdict, _articles(kind, outcomes))
    ctx = decision_context(session, runtime, policy, job)
    following = next_decision(kind, analysis, policy, ctx, state, verdict, tier)
    moved = Verdict(
        VerdictAction.ESCALATE,
        verdict.quality,
        verdict.output,
        (*verdict.reasons, f"search moves on to {_step(following)}"),
        following.tier,
    )
    if following.strategy in (Strategy.CLARIFY, Strategy.REVIEW):
        create_attempt(session, job.id, attempt + 1, following.tier.value, following.as_dict())
        end_search(session, job.id, attempt + 1, following)
        return moved, None
    queue = following.tier.queue  # the step is created running: its chord goes after the commit
    create_attempt(session, job.id, attempt + 1, following.tier.value, following.as_dict(), queue)
    fields = {"tier": following.tier.value, "attempt": attempt + 1}
    move_job(session, job.id, JobState.RUNNING, runtime.stage_timeout, through=JobState.ESCALATED, **fields)
    return moved, following


def end_search(session: Any, job_id: str, attempt: int, decision: Decision) -> None:
    """A search's clarify or review step: no model call, the job ends with its result (the
    question for the customer, or the best draft for a person)."""
    verdict = ending_verdict(decision)
    claim_attempt(session, job_id, attempt)
    record_verdict(session, job_id, attempt, verdict.action.value, verdict.quality, list(verdict.reasons))
    move_job(session, job_id, ENDED[verdict.action], tier=decision.tier.value, attempt=attempt)
    write_result(
        session,
        {
            "job_id": job_id,
            "attempt": attempt,
            "tier": decision.tier.value,
            "verdict": verdict.action.value,
            "quality": verdict.quality,
            "output": verdict.output,
        },
    )


def _step(decision: Decision) -> str:
    step = (decision.search or {}).get("step", decision.strategy.value)
    return f"{step} on {decision.tier.value}" if decision.experts else str(step)


def _articles(kind: KindSpec, outcomes: list[ExpertOutcome]) -> list[dict[str, Any]]:
    """The knowledge articles the attempt's retriever experts found."""
    found: list[dict[str, Any]] = []
    for outcome in outcomes:
        expert = kind.expert(outcome.name)
        if expert is not None and expert.type is ExpertType.RETRIEVER and outcome.output:
            found.extend(a for a in outcome.output.get("articles", []) if isinstance(a, dict))
    return found
