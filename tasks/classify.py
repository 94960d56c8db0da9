"""classify (queue `classify`): analyse a queued job, decide its first tier, fan attempt 1 out.

Attempt 1 is created running and its chord of experts sent to its tier's queue after the
commit, with no run_job between (run_job sends an attempt that recovery found lost).

The analysis is staged (rules, then the semantic stage, then a small-tier model)
and cached per content hash: a resubmitted job reuses the stored analysis. Model
calls happen outside any database transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from celery import shared_task

from tierflow.providers.tokens import count_tokens
from tierflow.routing.analysis import Analysis, job_text
from tierflow.routing.decision import Strategy
from tierflow.routing.decompose import Split, allows, plan_split
from tierflow.routing.experts import Prompt
from tierflow.routing.kinds.spec import KindSpec
from tierflow.routing.search import first_decision
from tierflow.routing.stages import LLMStage, analyze, builtin_intents
from tierflow.routing.states import JobState
from tierflow.store.db import transaction
from tierflow.store.lifecycle import (
    JobView,
    create_attempt,
    load_attempt,
    load_queued_job,
    move_job,
    upsert_expert_result,
)
from tierflow.tasks.aggregate import end_attempt, hold_for_review, undeclared
from tierflow.tasks.attempts import expert_context, send_fanouts
from tierflow.tasks.context import decision_context
from tierflow.tasks.dispatch import send_attempt, send_classify_many
from tierflow.tasks.experts import call_tier, request_for, spend
from tierflow.tasks.families import Fanout, depth_of, merge_when_ready, spawn_children
from tierflow.tasks.features import job_features
from tierflow.tasks.runtime import Runtime, runtime_for
from tierflow.tasks.search import end_search

log = logging.getLogger(__name__)


@shared_task(name="tierflow.classify", bind=True, ignore_result=True)
def classify(self: Any, job_id: str) -> None:
    runtime = runtime_for(self.app)
    with transaction(runtime.sessions) as session:
        job, cached = load_queued_job(session, job_id)
        if job is None:
            log.warning("classify: no job %s", job_id)
            return
    if job.state is JobState.QUEUED and job.kind not in runtime.kinds:
        _fail_undeclared(runtime, job)
        return
    if job.state is JobState.QUEUED:
        calls: list[dict[str, Any]] = []
        kind = runtime.kinds.get(job.kind)
        analysis = cached or analyze(
            kind,
            job.payload,
            runtime.policy(),
            semantic=runtime.semantic(kind),
            llm=_llm(runtime, calls),
            metadata=job.metadata,
            tokens=count_tokens(job_text(kind, job.payload)),
        )
        analysis = _split(runtime, kind, job, analysis, calls, cached is not None)
        sends = _classified(runtime, job, analysis, calls, cached is not None)
        if sends is None:
            return
        send_classify_many(self.app, sends.children)
        send_fanouts(self.app, sends.fanouts)
    elif job.state is JobState.CLASSIFIED:
        # Classified by an earlier release, which left attempt 1 to run_job: send it again
        # (run_job is idempotent, and the first delivery may have died before its send).
        with transaction(runtime.sessions) as session:
            attempt = load_attempt(session, job_id, 1)
        if attempt is not None and attempt.state != "judged":
            send_attempt(self.app, job_id, 1, attempt.tier)
    # else: already past classification, a stale redelivery


@dataclass
class Sends:
    """What a classification sends after its commit: attempt 1's chord, or a parent's children,
    or the merges of parents whose last child this job was (it ended at classification)."""

    children: list[str] = field(default_factory=list)
    fanouts: list[Fanout] = field(default_factory=list)


def _split(
    runtime: Runtime,
    kind: KindSpec,
    job: JobView,
    analysis: Analysis,
    calls: list[dict[str, Any]],
    cached: bool,
) -> Analysis:
    """The analysis with the job's split into asks, when its kind may split it at its depth."""
    depth = depth_of(job)
    if allows(kind, depth) is None:
        return replace(analysis, split=None)
    if cached and analysis.split is not None:
        return analysis
    policy = runtime.policy()
    llm = _llm(runtime, calls) if policy.llm_analysis else None
    intents = policy.intents or builtin_intents(kind)
    split = plan_split(kind, job.payload, depth, intents, llm, unsure=analysis.stage == "llm")
    return replace(
        analysis,
        split=split.as_dict(),
        stronger=analysis.stronger or split.refused,
        # a split's reasons are its own (explain shows them); one not made says why here
        reasons=analysis.reasons if split.parts else (*analysis.reasons, *split.reasons),
    )


def _classified(
    runtime: Runtime, job: JobView, analysis: Analysis, calls: list[dict[str, Any]], cached: bool
) -> Sends | None:
    """Store the analysis and the first decision, with attempt 1 created running (its chord
    goes out after the commit, with no run_job between), the job held for a person, or the job
    made a parent; what to send then. None when another delivery got there first."""
    policy = runtime.policy()
    kind = runtime.kinds.get(job.kind)
    sends = Sends()
    split = Split.from_dict(analysis.split)
    if split.parts:
        with transaction(runtime.sessions) as session:
            sends.children = spawn_children(session, runtime, policy, job, analysis, split)
            if not sends.children:
                return None
            _analysis_spend(session, job.id, analysis, calls)
        return sends
    features = job_features(runtime, policy, kind, job.payload)  # may embed: outside the transaction
    with transaction(runtime.sessions) as session:
        ctx = replace(decision_context(session, runtime, policy, job), prompt_features=features)
        decision = first_decision(kind, analysis, policy, ctx)  # decide(), or a search's first step
        body = analysis.as_dict() | {"cached": cached}
        ends_here = decision.strategy is Strategy.REVIEW or (
            decision.search is not None and decision.strategy is Strategy.CLARIFY
        )
        # classified, and running at once unless it ends here: one compare-and-set from queued
        target, through = (
            (JobState.CLASSIFIED, None) if ends_here else (JobState.RUNNING, JobState.CLASSIFIED)
        )
        fields = {"analysis": body, "tier": decision.tier.value, "attempt": 1}
        if not move_job(session, job.id, target, runtime.stage_timeout, through=through, **fields):
            return None
        body = decision.as_dict()
        queue = None if ends_here else decision.tier.queue
        create_attempt(session, job.id, 1, decision.tier.value, body, queue=queue)
        _analysis_spend(session, job.id, analysis, calls)
        if decision.search is not None and decision.strategy in (Strategy.CLARIFY, Strategy.REVIEW):
            end_search(session, job.id, 1, decision)
            sends.fanouts = merge_when_ready(session, runtime, job.id, job.parent_id)
            return sends
        if decision.strategy is Strategy.REVIEW:
            hold_for_review(session, job.id, 1, decision.tier, decision.reasons)
            sends.fanouts = merge_when_ready(session, runtime, job.id, job.parent_id)
            return sends
    context = expert_context(job.kind, job.payload, body)
    sends.fanouts = [Fanout(job.id, 1, decision.tier.value, list(decision.experts), context)]
    return sends


def _analysis_spend(session: Any, job_id: str, analysis: Analysis, calls: list[dict[str, Any]]) -> None:
    """What the analysis's model calls cost, as the job's attempt 0."""
    if not calls:
        return
    upsert_expert_result(
        session,
        {
            "job_id": job_id,
            "attempt": 0,
            "expert": "analysis",
            "error": None,
            "output": analysis.as_dict(),
            "confidence": analysis.confidence,
            **spend(calls),
        },
    )


def _fail_undeclared(runtime: Runtime, job: JobView) -> None:
    """A queued job of a kind no longer declared: one attempt that fails, its result saying why."""
    tier = runtime.policy().ladder[0]
    verdict = undeclared(job.kind)
    with transaction(runtime.sessions) as session:
        moved = move_job(
            session, job.id, JobState.CLASSIFIED, runtime.stage_timeout, tier=tier.value, attempt=1
        )
        if not moved:
            return
        decision: dict[str, object] = {
            "tier": tier.value,
            "strategy": "review",
            "experts": [],
            "models": [],
            "reasons": [],
        }
        create_attempt(session, job.id, 1, tier.value, decision | {"reasons": list(verdict.reasons)})
        end_attempt(session, job.id, 1, tier, verdict)
        merge_when_ready(
            session, runtime, job.id, job.parent_id
        )  # a parent of an undeclared kind merges no model


def _llm(runtime: Runtime, calls: list[dict[str, Any]]) -> LLMStage:
    """The LLM stage: the cheapest tier's models, with the analysis schema as structured output."""
    policy = runtime.policy()

    def ask(prompt: Prompt) -> str:
        request = request_for(prompt, runtime)
        return call_tier(runtime, list(policy.tier_models[policy.ladder[0]]), request, calls).text

    return ask
