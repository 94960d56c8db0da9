"""Decomposed jobs in the pipeline: a parent's children spawned at classification, and the
parent merged when its last child ends (routing/decompose.py decides; store/families.py joins).

A parent waits in `decomposed` with its attempt 1, the merge, created but not sent. The
transaction that ends a child (judged, held, failed, given up) calls `merge_when_ready`:
the one that finds every sibling ended merges. A concatenating merge is written in that
same transaction, so it can neither be lost nor written twice; a model merge moves the
parent to running and returns its chord, sent after the commit and recovered like any
attempt. The reconciler's sweep merges a parent whose trigger never came.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tierflow.routing.analysis import Analysis
from tierflow.routing.decision import Strategy
from tierflow.routing.decompose import Split, child_payload, held_parts, merged_output, sections
from tierflow.routing.jobs import JobMetadata, JobSpec
from tierflow.routing.kinds.spec import CONCATENATE, KindSpec
from tierflow.routing.policy import Policy
from tierflow.routing.states import JobState, Tier
from tierflow.routing.verdict import Verdict, VerdictAction
from tierflow.store.families import child_id, create_children, ended_children, parent_if_ready, ready_parents
from tierflow.store.lifecycle import (
    JobView,
    claim_attempt,
    conclude,
    create_attempt,
    load_job_attempt,
    move_job,
    record_verdict,
    start_attempt,
)
from tierflow.store.models import utcnow
from tierflow.tasks.runtime import Runtime

MERGE_ATTEMPT = 1


@dataclass(frozen=True)
class Fanout:
    """An attempt to send after the commit: its chord of experts with their context."""

    job_id: str
    attempt: int
    tier: str
    experts: list[str]
    context: dict[str, Any]


def depth_of(job: JobView) -> int:
    return int((job.metadata or {}).get("depth", 0))


def spawn_children(
    session: Any, runtime: Runtime, policy: Policy, job: JobView, analysis: Analysis, split: Split
) -> list[str]:
    """Within classify's transaction: the job becomes a parent waiting on one queued child per
    part, with its merge attempt created; returns the children's ids ([] when another delivery
    got there first). Each child is classified, routed and judged on its own."""
    kind = runtime.kinds.get(job.kind)
    assert kind.decompose is not None
    tier = policy.ladder[0]
    ids = [child_id(job.id, n) for n in range(len(split.parts))]
    merge = kind.decompose.merge
    decision = {
        "tier": tier.value,
        "strategy": Strategy.MERGE.value,
        "experts": [] if merge == CONCATENATE else [merge],
        "models": list(policy.tier_models.get(tier, ())),
        "policy_version": policy.version,
        "arm": None,
        "reasons": [*split.reasons, f"merge: {merge}"],
        "intent": analysis.intent,
        "stage": analysis.stage,
        "split": split.as_dict(),
        "children": ids,
        "merge": merge,
    }
    body = analysis.as_dict()
    moved = move_job(
        session, job.id, JobState.DECOMPOSED, runtime.stage_timeout, analysis=body, tier=tier.value, attempt=1
    )
    if not moved:
        return []
    create_attempt(session, job.id, MERGE_ATTEMPT, tier.value, decision)
    known = {k: v for k, v in (job.metadata or {}).items() if k in JobMetadata.model_fields}
    rows = []
    for n, (new_id, part) in enumerate(zip(ids, split.parts, strict=True)):
        payload = child_payload(kind, job.payload, part.text)
        spec = JobSpec(kind=job.kind, payload=payload, metadata=JobMetadata.model_validate(known))
        metadata = {**known, "parent": job.id, "part": n, "depth": depth_of(job) + 1}
        rows.append(
            {"id": new_id, "kind": job.kind, "payload": payload, "metadata": metadata,
             "content_hash": spec.content_hash()}
        )  # fmt: skip
    return create_children(session, job.id, rows, utcnow() + runtime.stage_timeout)


def merge_when_ready(session: Any, runtime: Runtime, job_id: str, parent_id: str | None) -> list[Fanout]:
    """Within the transaction that ended `job_id`, a child of `parent_id` (None: of no job, and
    nothing to do): merge the parent if every sibling has ended now (and, a merged parent being
    itself a child, its own parent); the model merges to send."""
    if parent_id is None or not parent_if_ready(session, parent_id):
        return []
    return merge_parent(session, runtime, parent_id)


def merge_parent(session: Any, runtime: Runtime, parent_id: str) -> list[Fanout]:
    """Merge a waiting parent whose children have all ended (its row locked by the caller)."""
    parent, current = load_job_attempt(session, parent_id, MERGE_ATTEMPT)
    if parent is None or current is None or parent.state is not JobState.DECOMPOSED:
        return []
    children = ended_children(session, parent_id)
    kind = runtime.kinds.get(parent.kind) if parent.kind in runtime.kinds else None
    merge = current.decision.get("merge", CONCATENATE)
    every_failed = all(child.state == JobState.FAILED.value for child in children)
    if kind is None or merge == CONCATENATE or every_failed:
        _concatenated(session, kind, parent, current.decision, children)
        return merge_when_ready(session, runtime, parent_id, parent.parent_id)
    start_attempt(session, parent_id, MERGE_ATTEMPT, f"tier.{current.tier}", None)
    move_job(session, parent_id, JobState.RUNNING, runtime.stage_timeout)
    context = merge_context(kind, parent, current.decision, children)
    return [Fanout(parent_id, MERGE_ATTEMPT, current.tier, list(current.decision["experts"]), context)]


def merge_context(
    kind: KindSpec, parent: JobView, decision: dict[str, Any], children: list[Any]
) -> dict[str, Any]:
    """What a model merge's experts get: the parent's payload with `parts`, the children's
    answers as sections, for its prompt."""
    asks = Split.from_dict(decision.get("split")).parts
    payload = parent.payload | {"parts": sections(kind, children, asks)}
    return {"kind": parent.kind, "payload": payload, "models": decision["models"], "specialist": None}


def _concatenated(
    session: Any, kind: KindSpec | None, parent: JobView, decision: dict[str, Any], children: list[Any]
) -> None:
    """The children's answers as the parent's result, judged: accepted when every child
    succeeded, held for a person when one did not, failed when every one failed."""
    asks = Split.from_dict(decision.get("split")).parts
    held = held_parts(children)
    if children and all(c.state == JobState.FAILED.value for c in children):
        action = VerdictAction.FAIL
    elif held or kind is None:
        action = VerdictAction.NEEDS_REVIEW
    else:
        action = VerdictAction.ACCEPT
    quality = min((c.quality for c in children), default=0.0)
    reasons = tuple(held) or (f"merged {len(children)} parts",)
    output = (
        merged_output(kind, children, asks) if kind is not None else {"parts": [c.job_id for c in children]}
    )
    if not claim_attempt(session, parent.id, MERGE_ATTEMPT):
        return
    record_verdict(session, parent.id, MERGE_ATTEMPT, action.value, quality, list(reasons))
    conclude(
        session, parent.id, MERGE_ATTEMPT, Tier(decision["tier"]), Verdict(action, quality, output, reasons)
    )


def held_by_children(session: Any, parent_id: str) -> list[str]:
    """After a model merge is judged: why its parent is not accepted whole (a child that did
    not succeed)."""
    return held_parts(ended_children(session, parent_id))


def sweep_parents(session: Any, runtime: Runtime, limit: int) -> list[Fanout]:
    """The reconciler's catch-all: every waiting parent whose children have all ended, merged."""
    fanouts: list[Fanout] = []
    for parent_id in ready_parents(session, limit):
        fanouts += merge_parent(session, runtime, parent_id)
    return fanouts
