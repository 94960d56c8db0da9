"""The strategy search: the strategy a job tries first, and the next one when a step is uncertain.

Pure. A job of a kind (or kind and intent) that `Policy.search` names walks its plan
(routing/search_plan.py): each step is one attempt whose decision carries the search's
state (`Decision.search`): the plan as it was when the job started, the step's position,
the model steps taken, and what the earlier steps learned (the knowledge articles they
retrieved, the best draft so far), which the next step's experts are given. When a
step's verdict is uncertain the search moves on to the next strategy that applies to the
kind, on the step's tier or the one it names; an expert failure retries the same step
one tier up. It never takes more than `max_steps` model steps, never starts a step its
budget or deadline cannot afford, and when it stops it ends with the order's clarify or
review step (review when the order ends with neither).

A job no plan names is decided by routing/decision.py alone, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import Decision, Strategy, decide, kind_experts
from tierflow.routing.kinds.spec import ExpertType, KindSpec
from tierflow.routing.policy import Policy
from tierflow.routing.search_plan import SearchPlan, SearchStep, plan_for
from tierflow.routing.states import Tier
from tierflow.routing.verdict import Verdict, VerdictAction

# Whether a step's model experts read the knowledge base: False none, True all; absent: as declared.
RETRIEVAL = {"direct": False, "retrieval": True}


@dataclass(frozen=True)
class SearchState:
    """Where a job's search is; stored in each step's decision (`Decision.search`)."""

    key: str  # the Policy.search key the plan came from
    plan: SearchPlan
    position: int = -1  # this attempt's step in plan.order; -1 before the first
    steps: int = 0  # model steps taken, this attempt's included
    carried: dict[str, Any] = field(default_factory=dict)  # "articles", "draft", "draft_quality"

    @property
    def step(self) -> SearchStep:
        return self.plan.steps()[self.position]

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        body = {
            "key": self.key,
            "plan": self.plan.model_dump(mode="json"),
            "position": self.position,
            "step": str(self.step),
            "steps": self.steps,
            "carried": self.carried,
        }
        retrieval = RETRIEVAL.get(self.step.strategy)
        return body | ({} if retrieval is None else {"retrieval": retrieval}) | extra

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> SearchState:
        plan = SearchPlan.model_validate(body["plan"])
        return cls(body["key"], plan, int(body["position"]), int(body["steps"]), dict(body["carried"]))


def step_experts(
    kind: KindSpec, strategy: str, experts: tuple[str, ...]
) -> tuple[tuple[str, ...], str | None]:
    """The experts a model step runs from the kind's `experts`, or () and why it does not apply."""
    if strategy == "direct":
        known = {name: kind.expert(name) for name in experts}
        return tuple(n for n, e in known.items() if e is None or e.type is not ExpertType.RETRIEVER), None
    if strategy == "retrieval" and not kind.retrieves():
        return (), f"{kind.name} jobs read no knowledge base"
    if strategy == "verify":
        verifiers = kind.verify_experts()
        if not verifiers:
            return (), f"{kind.name} jobs have no verifier"
        return (*experts, *(name for name in verifiers if name not in experts)), None
    return experts, None


def first_decision(kind: KindSpec, analysis: Analysis, policy: Policy, ctx: DecisionContext) -> Decision:
    """A first attempt's decision: the plan's first step that applies, or (no plan, a job held
    for its risk, or one the rules answered) the decision routing/decision.py makes alone."""
    plain = decide(kind, analysis, policy, ctx)
    found = plan_for(policy.search, kind.name, analysis.intent)
    if found is None or plain.strategy is Strategy.RULES:
        return plain
    if policy.review_high_risk and analysis.risk >= policy.review_risk:
        return plain
    state = SearchState(found[0], found[1])
    why = f"search {found[0]}: {' -> '.join(found[1].order)} (at most {found[1].max_steps} model steps)"
    return _walk(kind, analysis, policy, ctx, state, plain.tier, [why], first=True)


def next_decision(
    kind: KindSpec,
    analysis: Analysis,
    policy: Policy,
    ctx: DecisionContext,
    state: SearchState,
    verdict: Verdict,
    tier: Tier,
) -> Decision:
    """The next step's decision after the attempt at `state` (on `tier`) was judged `verdict`:
    an uncertain one moves on to the next strategy, failed experts retry the step one tier up."""
    if verdict.uncertain:
        why = f"{state.step} on {tier.value} judged uncertain (quality {verdict.quality:.2f})"
        return _walk(kind, analysis, policy, ctx, state, tier, [why])
    assert verdict.next_tier is not None, "failed experts with a tier left above"
    why = f"{state.step} failed on {tier.value}: retried on {verdict.next_tier.value}"
    again = replace(state, position=state.position - 1)
    return _walk(kind, analysis, policy, ctx, again, verdict.next_tier, [why], forced=verdict.next_tier)


def learned(state: SearchState, verdict: Verdict, articles: list[dict[str, Any]]) -> SearchState:
    """The state with what the judged step learned: the articles it retrieved (new ones added),
    and its answer as the draft when it is the best so far."""
    carried = dict(state.carried)
    known = {str(a.get("title")) for a in carried.get("articles", [])}
    fresh = [a for a in articles if str(a.get("title")) not in known]
    if fresh:
        carried["articles"] = [*carried.get("articles", []), *fresh]
    if verdict.output is not None and verdict.quality > float(carried.get("draft_quality", -1.0)):
        carried["draft"], carried["draft_quality"] = verdict.output, verdict.quality
    return replace(state, carried=carried)


def _walk(
    kind: KindSpec,
    analysis: Analysis,
    policy: Policy,
    ctx: DecisionContext,
    state: SearchState,
    tier: Tier,
    reasons: list[str],
    first: bool = False,
    forced: Tier | None = None,
) -> Decision:
    """The first step after `state.position` that can run; the order's ending when none can."""
    steps = state.plan.steps()
    for position in range(state.position + 1, len(steps)):
        step = steps[position]
        at = replace(state, position=position)
        if step.ends:
            return ending(policy, analysis, at, tier, reasons)
        stop = None if first else bounds(state, policy, ctx, forced or step.tier or tier)
        if stop is not None:
            reasons.append(f"search stopped: {stop}")
            break
        decision = _model_step(kind, analysis, policy, ctx, at, forced or step.tier or tier, first)
        if decision.strategy is Strategy(step.strategy):
            return replace(decision, reasons=(*reasons, *decision.reasons))
        reasons.append(f"skipped {step}: {'; '.join(decision.reasons)}")
    last = steps[-1]
    end = len(steps) - 1 if last.ends else len(steps)
    return ending(policy, analysis, replace(state, position=end), tier, reasons)


def _model_step(
    kind: KindSpec,
    analysis: Analysis,
    policy: Policy,
    ctx: DecisionContext,
    state: SearchState,
    tier: Tier,
    first: bool,
) -> Decision:
    """The decision for a model step, with the search's state; one of another strategy (review)
    when the step does not apply to the kind or cannot run within the job's constraints."""
    step = state.step
    experts, skip = step_experts(kind, step.strategy, kind_experts(kind, policy))
    if skip is not None:
        return Decision(tier, Strategy.REVIEW, (), (), policy.version, None, (skip,))
    floor = None if first and step.tier is None else tier
    decision = decide(kind, analysis, policy, ctx, floor=floor, chosen=(Strategy(step.strategy), experts))
    if decision.strategy is Strategy.REVIEW:
        return replace(decision, reasons=decision.reasons[1:] if floor is not None else decision.reasons)
    taken = replace(state, steps=state.steps + 1)
    own = [f"step {taken.steps}: {step} on {decision.tier.value}"]
    rest = decision.reasons[1:] if floor is not None else decision.reasons  # not "escalated to"
    return replace(decision, reasons=(*own, *rest), search=taken.as_dict())


def bounds(state: SearchState, policy: Policy, ctx: DecisionContext, tier: Tier) -> str | None:
    """Why the search may not start another model step on `tier`, or None when it may."""
    if state.steps >= state.plan.max_steps:
        return f"{state.steps} model steps taken, the plan's max_steps"
    if ctx.budget_left_usd is not None and ctx.budget_left_usd <= 0:
        return f"the job's budget is spent (${ctx.budget_left_usd:.6f} left)"
    if ctx.seconds_left is not None:
        expected = policy.tier_latency_s.get(tier, 0.0)
        if ctx.seconds_left <= 0 or expected > ctx.seconds_left:
            left = max(ctx.seconds_left, 0.0)
            return f"the deadline is {left:.0f}s away and a step on {tier.value} takes about {expected:.0f}s"
    return None


def ending(
    policy: Policy, analysis: Analysis, state: SearchState, tier: Tier, reasons: list[str]
) -> Decision:
    """The decision that ends the search: its order's clarify or review step, else review."""
    steps = state.plan.steps()
    strategy = steps[state.position].strategy if state.position < len(steps) else "review"
    if strategy == "clarify":
        state_body = state.as_dict(question=state.plan.ask(analysis.intent))
        why = "clarify: the customer is asked for what the job lacks"
    else:
        position = min(state.position, len(steps) - 1)
        state_body = replace(state, position=position).as_dict(step="review")
        why = "review: held for a person"
    return Decision(
        tier, Strategy(strategy), (), (), policy.version, None, (*reasons, why), search=state_body
    )


def ending_verdict(decision: Decision) -> Verdict:
    """The verdict of a search's ending step: the question for the customer (clarify), or the
    best draft so far for a person (review)."""
    assert decision.search is not None, "a search's ending step"
    if decision.strategy is Strategy.CLARIFY:
        output = {"question": decision.search["question"]}
        return Verdict(VerdictAction.NEEDS_CLARIFICATION, 0.0, output, decision.reasons)
    carried = decision.search.get("carried", {})
    quality = float(carried.get("draft_quality", 0.0))
    return Verdict(VerdictAction.NEEDS_REVIEW, quality, carried.get("draft"), decision.reasons)
