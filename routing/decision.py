"""From an analysis and a policy to a Decision: which tier, strategy, experts and models.

Scoring is kept apart from deciding: `choose_tier` maps a number to a tier and
nothing else; `decide` applies the learned scorers, exploration (up while a class's
top tier is unscored, down after), the policy's caps, the constraints and the
experiments, and records a reason for everything it did.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext, attempt_cost, misfit, usable_models
from tierflow.routing.experiments import ExperimentMode, bucket, in_treatment
from tierflow.routing.kinds.spec import KindSpec
from tierflow.routing.learning import first_tier, tier_probabilities
from tierflow.routing.policy import Policy
from tierflow.routing.specialists import (
    SpecialistChoice,
    lowest_start,
    raised_choices,
    raised_to,
    specialist_view,
)
from tierflow.routing.states import TIER_LADDER, Tier, next_tier

# Hashes job ids for exploration; "/" cannot be in an experiment's name, so it splits jobs independently.
EXPLORATION_SALT = "tierflow/explore"


class Strategy(str, Enum):
    DIRECT = "direct"  # one model call
    EXPERTS = "experts"  # several experts in parallel
    RETRIEVAL = "retrieval"  # the answering experts grounded in the knowledge base (a search step)
    VERIFY = "verify"  # an answer and an independent verifier that must agree
    RULES = "rules"  # the rules already answered with validated evidence: rule experts only
    CLARIFY = "clarify"  # no model call: a question back to the customer (a search step)
    REVIEW = "review"  # straight to a person, no model call
    MERGE = "merge"  # a decomposed job's answer, merged from its children's (routing/decompose.py)


Chosen = tuple[Strategy, tuple[str, ...]]  # a strategy and its experts


@dataclass(frozen=True)
class Decision:
    tier: Tier
    strategy: Strategy
    experts: tuple[str, ...]
    models: tuple[str, ...]
    policy_version: int
    arm: str | None
    reasons: tuple[str, ...]
    estimated_cost_usd: float | None = None
    shadow: dict[str, Any] | None = None
    # P(this first tier) under the policy, over the exploration draw; None: a later attempt, or
    # the caps or constraints moved the job off the tier the policy chose.
    propensity: float | None = None
    # The kind's specialist whose experts, prompts, checks and tier limits the attempt uses, the
    # intent that chose it and the analysis stage that decided; None: the kind has no specialists.
    specialist: str | None = None
    intent: str | None = None
    stage: str | None = None
    # The strategy search this attempt is a step of (routing/search.py); None: no search.
    search: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        body = {
            "tier": self.tier.value,
            "strategy": self.strategy.value,
            "experts": list(self.experts),
            "models": list(self.models),
            "policy_version": self.policy_version,
            "arm": self.arm,
            "reasons": list(self.reasons),
            "estimated_cost_usd": self.estimated_cost_usd,
            "shadow": self.shadow,
            "propensity": self.propensity,
            "specialist": self.specialist,
            "intent": self.intent,
            "stage": self.stage,
        }
        return body if self.search is None else body | {"search": self.search}


def choose_tier(difficulty: float, policy: Policy) -> Tier:
    """The cheapest tier whose difficulty bound covers the score, on the policy's ladder: a tier
    the ladder lacks (medium on a small-large ladder) gives the next tier up it has."""
    if difficulty <= policy.small_max_difficulty:
        wanted = Tier.SMALL
    elif difficulty <= policy.medium_max_difficulty:
        wanted = Tier.MEDIUM
    else:
        wanted = Tier.LARGE
    order = TIER_LADDER.index
    return next((tier for tier in policy.ladder if order(tier) >= order(wanted)), policy.ladder[-1])


def decide(
    kind: KindSpec,
    analysis: Analysis,
    policy: Policy,
    ctx: DecisionContext | None = None,
    floor: Tier | None = None,
    chosen: Chosen | None = None,
) -> Decision:
    """Decide a first attempt, or (with `floor`, the tier to escalate to) a later one; as the
    specialist the analysis selects runs the kind (the same one for every attempt of a job).

    Args:
        chosen: the strategy and experts a strategy search chose (routing/search.py); risk
            review and an answer by the rules still come first. None: chosen from the analysis.
    """
    ctx = ctx or DecisionContext()
    view, choice = specialist_view(kind, analysis)
    effective, arm = _arm(policy, ctx.job_id)
    decision = _chosen(_decide(view, analysis, effective, ctx, floor, arm, chosen), choice)
    shadows = [e for e in policy.experiments if e.mode is ExperimentMode.SHADOW]
    if not shadows:
        return decision
    shadow = shadows[0]
    twin = _decide(
        view, analysis, policy.with_overrides(shadow.overrides), ctx, floor, f"{shadow.name}:shadow", chosen
    )
    return replace(decision, shadow=_chosen(twin, choice).as_dict())


def _chosen(decision: Decision, choice: SpecialistChoice | None) -> Decision:
    """The decision naming its specialist, intent and deciding stage, the choice's reason first."""
    if choice is None:
        return decision
    return replace(
        decision,
        specialist=choice.specialist,
        intent=choice.intent,
        stage=choice.stage,
        reasons=(choice.reason, *decision.reasons),
    )


def _arm(policy: Policy, job_id: str) -> tuple[Policy, str | None]:
    arms, effective = [], policy
    for experiment in policy.experiments:
        if experiment.mode is ExperimentMode.SHADOW:
            continue
        treated = in_treatment(job_id, experiment)
        arms.append(f"{experiment.name}:{'treatment' if treated else 'control'}")
        if treated:
            effective = effective.with_overrides(experiment.overrides)
    return effective, ",".join(arms) or None


def kind_experts(kind: KindSpec, policy: Policy) -> tuple[str, ...]:
    """The experts a job of the kind fans out to: the policy's for it, else the kind's own."""
    return policy.experts.get(kind.name) or kind.default_experts()


def _uses_model(kind: KindSpec, name: str) -> bool:
    expert = kind.expert(name)
    return expert is not None and expert.uses_model


def _strategy(kind: KindSpec, analysis: Analysis, policy: Policy, chosen: Chosen | None = None) -> Chosen:
    experts = kind_experts(kind, policy)
    if policy.review_high_risk and analysis.risk >= policy.review_risk:
        return Strategy.REVIEW, ()
    if analysis.rules_answered:
        return Strategy.RULES, tuple(name for name in experts if not _uses_model(kind, name))
    if chosen is not None:
        return chosen
    verifiers = kind.verify_experts()
    if verifiers and analysis.difficulty >= policy.verify_difficulty:
        return Strategy.VERIFY, (*experts, *verifiers)
    model_experts = [name for name in experts if _uses_model(kind, name)]
    return (Strategy.DIRECT if len(model_experts) <= 1 else Strategy.EXPERTS), experts


def model_calls(kind: KindSpec, experts: tuple[str, ...]) -> int:
    return sum(1 for name in experts if _uses_model(kind, name))


def on_tier(kind: KindSpec, experts: tuple[str, ...], tier: Tier) -> tuple[str, ...]:
    """The experts that run on `tier` (an expert may be limited to some tiers)."""
    return tuple(name for name in experts if (e := kind.expert(name)) is None or e.on_tier(tier))


def over_budget(kind: KindSpec, cost: float | None) -> str | None:
    """Why the kind's budget review rule holds an attempt of this estimated cost, or None."""
    for rule in kind.review:
        if rule.type == "budget" and rule.max_usd is not None and cost is not None and cost > rule.max_usd:
            return f"estimated ${cost:.6f} is over the kind's review budget of ${rule.max_usd:.6f}"
    return None


def _decide(
    kind: KindSpec,
    analysis: Analysis,
    policy: Policy,
    ctx: DecisionContext,
    floor: Tier | None,
    arm: str | None,
    picked: Chosen | None = None,
) -> Decision:
    pin = ctx.pinned_tier
    tier, reasons, propensity = _start(kind, analysis, policy, ctx, floor)
    chosen_first = tier

    def review(why: str) -> Decision:
        return Decision(tier, Strategy.REVIEW, (), (), policy.version, arm, (*reasons, why))

    if pin is not None and pin not in policy.ladder:
        return review(f"pinned to {pin.value}, which the ladder does not name")
    strategy, experts = _strategy(kind, analysis, policy, picked)
    if strategy is Strategy.REVIEW:
        return review(f"risk {analysis.risk:.2f} >= {policy.review_risk:.2f}: straight to a person")
    cap = pin or policy.cap(kind.name, kind.routing.max_tier)
    if policy.ladder.index(tier) > policy.ladder.index(cap):
        if floor is not None:
            held = f"pinned to {cap.value}" if pin else f"{kind.name} jobs may not go above {cap.value}"
            return review(held)
        reasons.append(f"capped at {cap.value} for {kind.name} jobs")
        tier = cap
    calls = model_calls(kind, experts)
    # a first attempt the policy routes may go down to cheaper tiers, as far as the kind allows
    lowest = (lowest_start(kind, policy) or policy.ladder[0]) if floor is None and pin is None else None
    chosen = _first_fit(kind, tier, cap, policy, ctx, calls, lowest, reasons)
    if chosen is None and ctx.seconds_left is not None:
        reasons.append("no tier meets the deadline: routed without it")
        chosen = _first_fit(kind, tier, cap, policy, replace(ctx, seconds_left=None), calls, lowest, reasons)
    if chosen is None:
        return review("no tier fits the job's constraints")
    candidate, models = chosen
    if candidate is not tier:
        reasons.append(f"routed to {candidate.value} instead")
    running = on_tier(kind, experts, candidate)
    if experts and not running:
        reasons.append(f"no expert of {kind.name} jobs runs on {candidate.value}")
    kept = propensity if candidate is chosen_first else None
    none_runs = bool(experts) and not running
    return _attempt(kind, strategy, running, none_runs, chosen, policy, ctx, arm, reasons, kept)


def _start(
    kind: KindSpec, analysis: Analysis, policy: Policy, ctx: DecisionContext, floor: Tier | None
) -> tuple[Tier, list[str], float | None]:
    """The tier an attempt starts from before the caps and constraints, why, and (for a first
    attempt the policy chose) its propensity. A pinned first attempt starts on its pin."""
    if floor is not None:
        return floor, [f"escalated to {floor.value}"], None
    if ctx.pinned_tier is not None:
        return ctx.pinned_tier, [f"pinned to {ctx.pinned_tier.value} by its submitter"], None
    tier = choose_tier(analysis.difficulty, policy)
    reasons = [f"difficulty {analysis.difficulty:.2f} maps to {tier.value}"]
    tier, reasons = _first_tier(kind, analysis, policy, ctx, tier, reasons)
    raised = raised_to(tier, lowest_start(kind, policy))
    if raised is not tier:
        reasons.append(f"min_tier: started on {raised.value} instead of {tier.value}")
    return raised, reasons, first_tier_choices(kind, analysis, policy, ctx).get(raised)


def _attempt(
    kind: KindSpec,
    strategy: Strategy,
    experts: tuple[str, ...],
    none_runs: bool,
    chosen: tuple[Tier, tuple[str, ...]],
    policy: Policy,
    ctx: DecisionContext,
    arm: str | None,
    reasons: list[str],
    propensity: float | None,
) -> Decision:
    """The decision for the chosen tier and models; review when none of the kind's experts runs
    there or the estimated cost is over the kind's review budget."""
    tier, models = chosen
    cost = attempt_cost(models[0], model_calls(kind, experts), policy, ctx)
    held = "held for a person" if none_runs else over_budget(kind, cost)
    if held is not None:
        return Decision(tier, Strategy.REVIEW, (), (), policy.version, arm, (*reasons, held))
    return Decision(
        tier, strategy, experts, models, policy.version, arm, tuple(reasons), cost, None, propensity
    )


def _first_tier(
    kind: KindSpec, analysis: Analysis, policy: Policy, ctx: DecisionContext, tier: Tier, reasons: list[str]
) -> tuple[Tier, list[str]]:
    """A first attempt's tier before the caps and constraints, and why: the learned scorers'
    pick over the rules' `tier`, then exploration or (when the analysis failed) one tier up."""
    learned = learned_first_tier(kind, policy, ctx)
    if learned is not None:
        tier, reasons = learned[0], [learned[1]]
    # A failed analysis starts one tier up; where the rules answered, no model is called to observe.
    explored = None
    if not (analysis.stronger or analysis.rules_answered):
        explored = exploration(kind, policy, ctx.job_id, tier, learned is not None)
    if explored is not None:
        return explored[0], [*reasons, explored[1]]
    if learned is not None:
        reasons.append(f"learned scorer starts the job on {tier.value}")
    above = next_tier(tier, policy.ladder) if analysis.stronger else None
    if above is not None:
        reasons.append(f"analysis failed: starting one tier up, on {above.value}")
        return above, reasons
    return tier, reasons


def learned_first_tier(kind: KindSpec, policy: Policy, ctx: DecisionContext) -> tuple[Tier, str] | None:
    """The first tier the policy's learned scorers pick for a first attempt, and why; None when
    they cannot score the job."""
    learned = policy.learned.get(kind.name)
    features = ctx.prompt_features
    if learned is None or features is None or features.shape != (learned.width,):
        return None
    probabilities = tier_probabilities(learned, features, policy.ladder)
    return first_tier(probabilities, learned.gain_threshold, policy.learning.min_start_probability)


def first_tier_choices(
    kind: KindSpec, analysis: Analysis, policy: Policy, ctx: DecisionContext
) -> dict[Tier, float]:
    """The policy's probability of each first tier (before caps and constraints) over the
    exploration draw, which hashes the job id: a share of ids explores, the rest do not. A kind
    with specialists is routed as the one the analysis selects, its min_tier raising the start."""
    kind = specialist_view(kind, analysis)[0]
    return raised_choices(_tier_choices(kind, analysis, policy, ctx), lowest_start(kind, policy))


def _tier_choices(
    kind: KindSpec, analysis: Analysis, policy: Policy, ctx: DecisionContext
) -> dict[Tier, float]:
    learned = learned_first_tier(kind, policy, ctx)
    tier = learned[0] if learned is not None else choose_tier(analysis.difficulty, policy)
    target = None
    if not (analysis.stronger or analysis.rules_answered):
        target = exploration(kind, policy, ctx.job_id, tier, learned is not None, drawn=True)
    if analysis.stronger and target is None:
        tier = next_tier(tier, policy.ladder) or tier
    if target is None or not ctx.job_id:
        return {tier: 1.0}
    share = policy.learning.explore_share
    return {tier: 1.0 - share, target[0]: share}


def exploration(
    kind: KindSpec, policy: Policy, job_id: str, tier: Tier, scored_by_learning: bool, drawn: bool = False
) -> tuple[Tier, str] | None:
    """Where a first attempt the policy starts on `tier` starts instead so that an outcome the
    learner lacks is observed, and why; None when it does not explore.

    A job explores when its id is among `learning.explore_share` of job ids (hashed as
    experiments hash them, under a salt of its own, so a redelivery decides the same). Where:
    - up, to the top tier the class may reach (the ladder's top, or its `max_tier`), while the
      class's learned routing has no scorer for that tier (or there is none yet). Otherwise a
      workload the rules keep on one tier never shows another, and reflect, which needs
      outcomes of two tiers, never fits anything;
    - down, once that tier is scored and the learned scorers placed the job
      (`scored_by_learning`) above the cheapest scored tier: to that tier, whose outcome on
      the jobs routed away is otherwise never seen. It applies even where that tier's P(good)
      is below `min_start_probability`: the share bounds its cost, and it is how a wrong floor
      is found.
    The judge still escalates a bad answer; the caps, review and the constraints apply after.
    With `drawn`, where it would go were the job among the explorers (its propensity's other side).
    """
    share = policy.learning.explore_share
    if share <= 0 or not (drawn or explores(job_id, share)):
        return None
    learned = policy.learned.get(kind.name)
    scored = [t for t in policy.ladder if learned is not None and t in learned.tiers]
    top, rank = policy.cap(kind.name, kind.routing.max_tier), policy.ladder.index
    if top not in scored:
        target = top if rank(top) > rank(tier) else None
        why = f"{top.value}, which has too few judged outcomes of {kind.name} jobs to learn from"
    else:
        target = scored[0] if scored_by_learning and rank(scored[0]) < rank(tier) else None
        why = f"{scored[0].value} instead of {tier.value} so its outcome is observed"
    if target is None:
        return None
    return target, f"exploring: started on {why} (explore_share {share * 100:g}%)"


def explores(job_id: str, share: float) -> bool:
    """Whether this job is among the `share` of job ids that explore; never without an id."""
    return bool(job_id) and bucket(job_id, EXPLORATION_SALT) < share


def _first_fit(
    kind: KindSpec,
    tier: Tier,
    cap: Tier,
    policy: Policy,
    ctx: DecisionContext,
    calls: int,
    lowest: Tier | None,
    reasons: list[str],
) -> tuple[Tier, tuple[str, ...]] | None:
    """The first candidate tier with usable models that fits the constraints; why others did not."""
    for candidate in _candidates(tier, cap, policy.ladder, lowest):
        models, notes = usable_models(candidate, kind.name, policy, ctx, kind.routing.capabilities)
        reasons.extend(notes)
        why = (
            misfit(candidate, models, calls, policy, ctx)
            if models
            else f"{candidate.value} has no usable model"
        )
        if why is None:
            return candidate, models
        reasons.append(why)
    return None


def _candidates(tier: Tier, cap: Tier, ladder: tuple[Tier, ...], lowest: Tier | None) -> list[Tier]:
    """The tier, the tiers above it up to the cap, then (first attempts only: `lowest` is set) the
    cheaper ones down to `lowest`."""
    start, top = ladder.index(tier), ladder.index(cap)
    up = list(ladder[start : top + 1])
    bottom = ladder.index(lowest) if lowest is not None else start
    down = list(reversed(ladder[bottom:start]))
    return up + down
