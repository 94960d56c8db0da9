"""The routing coach: an LLM reads recent failures and proposes policy changes; we decide.

Owns the coach's prompt and answer schema, and `review_proposal`, which turns a
proposal into overrides only after checking each change: the field must be one
the coach may touch, the value inside its bounds, the step no larger than
MAX_STEP (a larger one is cut to MAX_STEP and says so), and the changed policy
must still validate. Everything proposed, applied or refused is returned for the
policy version to record. A proposal is never applied as it came.

Pure: pydantic only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierflow.routing.experts import ExpertAnswer, Prompt
from tierflow.routing.policy import Policy
from tierflow.routing.search_plan import SearchPlan

# The numbers the coach may move, and the range each must stay in.
COACH_FIELDS: dict[str, tuple[float, float]] = {
    "accept_quality": (0.3, 0.95),
    "small_max_difficulty": (0.0, 1.0),
    "medium_max_difficulty": (0.0, 1.0),
    "review_risk": (0.3, 1.0),
    "verify_difficulty": (0.0, 1.01),
}
MAX_STEP = 0.1  # the most one coach run may move any field
MAX_FAILURES = 20  # failures shown to the coach per run
EXCERPT_CHARS = 300


class CoachChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str  # a COACH_FIELDS name, or "search.KEY" to reorder that strategy search's plan
    value: float | list[str]
    why: str = ""


SEARCH_FIELD = "search."


class CoachProposal(ExpertAnswer):
    summary: str
    changes: list[CoachChange] = Field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    """One recent attempt that was not good, as the coach sees it."""

    kind: str
    tier: str
    verdict: str
    excerpt: str


def coach_prompt(policy: Policy, failures: list[Failure], statistics: dict[str, Any]) -> Prompt:
    """The request to the coach: the numbers it may change, the statistics, the failures."""
    current: dict[str, Any] = {name: getattr(policy, name) for name in COACH_FIELDS}
    current["search"] = {key: list(plan.order) for key, plan in policy.search.items()}
    shown = [
        {"kind": f.kind, "tier": f.tier, "verdict": f.verdict, "text": f.excerpt[:EXCERPT_CHARS]}
        for f in failures[:MAX_FAILURES]
    ]
    system = (
        "Task: coach\n"
        "You review a job router's recent failures and propose changes to its routing policy. "
        f"You may change only these fields, each by at most {MAX_STEP}: "
        + ", ".join(f"{name} in [{low}, {high}]" for name, (low, high) in COACH_FIELDS.items())
        + '. You may also reorder a strategy search of policy.search: field "search.KEY", value its '
        "order as a list of the same steps (one that ends the job stays last). "
        'Answer with JSON: {"summary": str, "changes": [{"field", "value", "why"}], '
        '"confidence": number}. Propose nothing when nothing should change.'
    )
    user = json.dumps({"policy": current, "statistics": statistics, "failures": shown}, sort_keys=True)
    return Prompt(task="coach", system=system, user=user, schema=CoachProposal, max_tokens=600)


def review_proposal(policy: Policy, proposal: CoachProposal) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The overrides to apply and a record of every proposed change with what became of it."""
    overrides: dict[str, Any] = {}
    record: list[dict[str, Any]] = []
    for change in proposal.changes:
        entry: dict[str, Any] = {"field": change.field, "proposed": change.value, "why": change.why}
        if change.field.startswith(SEARCH_FIELD):
            outcome = _reorder(policy, change, overrides)
            record.append({**entry, "outcome": outcome})
            continue
        bounds = COACH_FIELDS.get(change.field)
        if bounds is None or isinstance(change.value, list):
            record.append({**entry, "outcome": "refused: not a field the coach may change"})
            continue
        low, high = bounds
        if not low <= change.value <= high:
            record.append({**entry, "outcome": f"refused: outside [{low}, {high}]"})
            continue
        now = float(getattr(policy, change.field))
        value = min(max(change.value, now - MAX_STEP), now + MAX_STEP)
        overrides[change.field] = round(value, 6)
        outcome = "applied" if value == change.value else f"applied, bounded to {value:.3f} (step {MAX_STEP})"
        record.append({**entry, "from": now, "to": round(value, 6), "outcome": outcome})
    if overrides:
        try:
            coached(policy, overrides)
        except ValidationError as exc:
            reason = f"refused: the changed policy does not validate ({exc.errors()[0]['msg']})"
            refused = [{**e, "outcome": reason} if e["outcome"].startswith("applied") else e for e in record]
            return {}, refused
    return overrides, record


def _reorder(policy: Policy, change: CoachChange, overrides: dict[str, Any]) -> str:
    """A new order for one search plan, into `overrides["search"]`: the same steps only."""
    key = change.field.removeprefix(SEARCH_FIELD)
    plan = policy.search.get(key)
    if plan is None:
        return f"refused: no search plan {key!r}"
    if not isinstance(change.value, list) or sorted(change.value) != sorted(plan.order):
        return f"refused: a reorder keeps the plan's steps ({', '.join(plan.order)})"
    try:
        reordered = SearchPlan.model_validate({**plan.model_dump(mode="json"), "order": change.value})
    except ValidationError as exc:
        return f"refused: {exc.errors()[0]['msg']}"
    plans = overrides.setdefault("search", {k: p.model_dump(mode="json") for k, p in policy.search.items()})
    plans[key] = reordered.model_dump(mode="json")
    return f"applied: {' -> '.join(plan.order)} became {' -> '.join(reordered.order)}"


def coached(policy: Policy, overrides: dict[str, Any]) -> Policy:
    """`policy` with the coach's reviewed overrides, validated (experiments and scorers kept)."""
    return Policy.model_validate({**policy.model_dump(mode="json"), **overrides})
