"""A job pinned to a tier (JobMetadata.tier, or `model: tierflow/<tier>` over the API) runs there
only: it is not routed, not moved to a cheaper tier, and never escalated past the pin."""

from __future__ import annotations

import pytest

from tierflow.api.shapes import line_job, model_tier
from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import Strategy, decide
from tierflow.routing.jobs import JobMetadata
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.policy import Policy
from tierflow.routing.states import Tier

PROMPT = builtin_registry().get("prompt")
TIERS = {
    Tier.SMALL: ("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"),
    Tier.MEDIUM: ("openai:gpt-4o",),
    Tier.LARGE: ("anthropic:claude-sonnet-4-5",),
}
POLICY = Policy(tier_models=TIERS)


def _analysis(difficulty: float) -> Analysis:
    return Analysis("general", "prompt", difficulty, 0.0, False, 0.8, "rules")


def test_a_pinned_job_starts_on_its_pin_whatever_its_difficulty() -> None:
    hard = decide(PROMPT, _analysis(0.95), POLICY, DecisionContext(pinned_tier=Tier.SMALL))
    assert hard.tier is Tier.SMALL and hard.models == TIERS[Tier.SMALL]
    assert hard.reasons[0] == "pinned to small by its submitter" and hard.propensity is None
    easy = decide(PROMPT, _analysis(0.05), POLICY, DecisionContext(pinned_tier=Tier.LARGE))
    assert easy.tier is Tier.LARGE and easy.strategy is not Strategy.REVIEW


def test_a_pinned_job_is_held_for_review_instead_of_escalating() -> None:
    ctx = DecisionContext(pinned_tier=Tier.SMALL)
    escalated = decide(PROMPT, _analysis(0.2), POLICY, ctx, floor=Tier.MEDIUM)
    assert escalated.strategy is Strategy.REVIEW and escalated.reasons[-1] == "pinned to small"
    unpinned = decide(PROMPT, _analysis(0.2), POLICY, DecisionContext(), floor=Tier.MEDIUM)
    assert unpinned.tier is Tier.MEDIUM and unpinned.strategy is not Strategy.REVIEW


def test_a_pinned_tier_with_no_usable_model_holds_the_job_rather_than_moving_it() -> None:
    down = frozenset(TIERS[Tier.MEDIUM])
    pinned = decide(
        PROMPT, _analysis(0.5), POLICY, DecisionContext(unavailable=down, pinned_tier=Tier.MEDIUM)
    )
    assert pinned.strategy is Strategy.REVIEW and pinned.tier is Tier.MEDIUM
    routed = decide(PROMPT, _analysis(0.5), POLICY, DecisionContext(unavailable=down))
    assert routed.tier is not Tier.MEDIUM and routed.strategy is not Strategy.REVIEW


def test_a_pin_off_the_ladder_is_held_for_review() -> None:
    two = Policy(
        tier_models={Tier.SMALL: TIERS[Tier.SMALL], Tier.LARGE: TIERS[Tier.LARGE]},
        ladder=(Tier.SMALL, Tier.LARGE),
    )
    decision = decide(PROMPT, _analysis(0.5), two, DecisionContext(pinned_tier=Tier.MEDIUM))
    assert decision.strategy is Strategy.REVIEW and "ladder does not name" in decision.reasons[-1]


@pytest.mark.parametrize(
    ("model", "tier"),
    [("tierflow/auto", None), ("auto", None), ("tierflow/small", "small"), ("large", "large")],
)
def test_the_request_model_names_the_pin(model: str, tier: str | None) -> None:
    assert model_tier({"model": model}) == tier


@pytest.mark.parametrize("model", ["gpt-4o", "tierflow/huge", "tierflow/", None, 3])
def test_a_model_that_is_no_tier_is_refused_naming_body_model(model: object) -> None:
    with pytest.raises(ValueError, match=r"^body\.model: .* tierflow/auto, tierflow/small"):
        model_tier({"model": model})


def test_a_tier_off_the_deployments_ladder_is_refused() -> None:
    with pytest.raises(ValueError, match="tier medium is not on this deployment's ladder"):
        model_tier({"model": "tierflow/medium"}, ("small", "large"))


def test_a_batch_line_with_a_tier_model_becomes_a_pinned_job() -> None:
    line = {
        "custom_id": "c1",
        "url": "/v1/chat/completions",
        "body": {"model": "tierflow/medium", "messages": [{"role": "user", "content": "hi"}]},
    }
    _, job = line_job(line, "oa-1", "acme")
    assert job["metadata"] == {"tenant": "acme", "tier": "medium"}
    assert JobMetadata.model_validate(job["metadata"]).tier is Tier.MEDIUM
