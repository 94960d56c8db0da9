"""From an analysis and a policy to a Decision: which tier, which experts, which models.

Scoring is kept apart from deciding: `choose_tier` maps a number to a tier and
nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from routing.analysis import Analysis
from routing.jobs import JobKind
from routing.policy import Policy
from routing.states import Tier


@dataclass(frozen=True)
class Decision:
    tier: Tier
    strategy: str
    experts: tuple[str, ...]
    models: tuple[str, ...]
    policy_version: int
    arm: str | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "tier": self.tier.value,
            "strategy": self.strategy,
            "experts": list(self.experts),
            "models": list(self.models),
            "policy_version": self.policy_version,
            "arm": self.arm,
            "reasons": list(self.reasons),
        }


def choose_tier(difficulty: float, policy: Policy) -> Tier:
    """The cheapest tier whose difficulty bound covers the score."""
    if difficulty <= policy.small_max_difficulty:
        return Tier.SMALL
    if difficulty <= policy.medium_max_difficulty:
        return Tier.MEDIUM
    return Tier.LARGE


def decide(kind: JobKind, analysis: Analysis, policy: Policy, tier: Tier | None = None) -> Decision:
    """Decide the tier (or take the given one, as an escalation does) and the experts."""
    reasons: list[str] = []
    if tier is None:
        tier = choose_tier(analysis.difficulty, policy)
        reasons.append(f"difficulty {analysis.difficulty:.2f} maps to {tier.value}")
    else:
        reasons.append(f"escalated to {tier.value}")
    if tier not in policy.ladder:
        tier = policy.ladder[-1]
        reasons.append(f"tier not on the ladder; using {tier.value}")
    experts = policy.experts[kind]
    return Decision(
        tier=tier,
        strategy="experts" if len(experts) > 1 else "direct",
        experts=experts,
        models=policy.tier_models[tier],
        policy_version=policy.version,
        arm=None,
        reasons=tuple(reasons),
    )
