"""What limits a routing decision besides difficulty: health, context, capabilities, budget, deadline.

Pure. The caller gathers the facts (which models are out, what the job may still
spend, how long it has, the price table) into a DecisionContext.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tierflow.routing.policy import Policy
from tierflow.routing.states import Tier


@dataclass(frozen=True)
class DecisionContext:
    """Facts about the job and the cluster at decision time."""

    job_id: str = ""
    job_tokens: int = 0
    budget_left_usd: float | None = None
    seconds_left: float | None = None
    unavailable: frozenset[str] = frozenset()  # models with an open breaker
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # USD per million in / out
    # The job's prompt features for the policy's learned scorers (routing.scorers); None: not computed.
    prompt_features: NDArray[np.float64] | None = None
    # The tier the job's submitter pinned it to (JobMetadata.tier); None: the policy chooses.
    pinned_tier: Tier | None = None


def usable_models(
    tier: Tier, kind: str, policy: Policy, ctx: DecisionContext, declared: tuple[str, ...] = ()
) -> tuple[tuple[str, ...], list[str]]:
    """The tier's models this job may use, and why the others may not.

    Args:
        declared: the capabilities the kind declares, used when the policy names none for it.
    """
    needed = set(policy.kind_capabilities.get(kind, declared))
    usable, notes = [], []
    for ref in policy.tier_models.get(tier, ()):
        window = policy.context_windows.get(ref)
        if ref in ctx.unavailable:
            notes.append(f"{ref} unavailable (breaker open)")
        elif window is not None and ctx.job_tokens > window:
            notes.append(f"{ref} context {window} < job {ctx.job_tokens} tokens")
        elif ref in policy.model_capabilities and not needed <= set(policy.model_capabilities[ref]):
            notes.append(f"{ref} lacks {', '.join(sorted(needed - set(policy.model_capabilities[ref])))}")
        else:
            usable.append(ref)
    return tuple(usable), notes


def attempt_cost(model: str, model_calls: int, policy: Policy, ctx: DecisionContext) -> float | None:
    """Estimated USD for one attempt on `model`; None when the model has no known price."""
    price = ctx.prices.get(model)
    if price is None:
        return None
    per_call = (ctx.job_tokens * price[0] + policy.expected_output_tokens * price[1]) / 1e6
    return per_call * max(model_calls, 1)


def misfit(
    tier: Tier, models: tuple[str, ...], model_calls: int, policy: Policy, ctx: DecisionContext
) -> str | None:
    """Why the tier cannot take the job within its budget and deadline, or None when it can."""
    if ctx.budget_left_usd is not None:
        cost = attempt_cost(models[0], model_calls, policy, ctx)
        if cost is not None and cost > ctx.budget_left_usd:
            return f"{tier.value} costs about ${cost:.6f}, over the ${ctx.budget_left_usd:.6f} left"
    if ctx.seconds_left is not None:
        expected = policy.tier_latency_s.get(tier, 0.0)
        if expected > ctx.seconds_left:
            return f"{tier.value} takes about {expected:.0f}s, over the {max(ctx.seconds_left, 0):.0f}s left"
    return None
