"""The routing policy: versioned thresholds, tier models, ladder and expert sets.

Pure data. The store keeps its versions; the reflexive issue learns new ones.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from routing.jobs import JobKind
from routing.states import TIER_LADDER, Tier

DEFAULT_EXPERTS: dict[JobKind, tuple[str, ...]] = {
    JobKind.SUPPORT: ("drafter", "policy_check"),
    JobKind.DOCUMENT: ("extractor", "rule_extractor"),
    JobKind.PROMPT: ("answerer",),
}

DEFAULT_TIER_MODELS: dict[Tier, tuple[str, ...]] = {
    Tier.SMALL: ("fake:fake-small",),
    Tier.MEDIUM: ("fake:fake-medium",),
    Tier.LARGE: ("fake:fake-large",),
}


class Policy(BaseModel):
    """Everything a routing decision and a verdict depend on, besides the job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    small_max_difficulty: float = Field(default=0.35, ge=0, le=1)
    medium_max_difficulty: float = Field(default=0.65, ge=0, le=1)
    accept_quality: float = Field(default=0.7, ge=0, le=1)
    review_risk: float = Field(default=0.7, ge=0, le=1)
    refund_limit_usd: float = Field(default=200.0, ge=0)
    ladder: tuple[Tier, ...] = TIER_LADDER
    tier_models: dict[Tier, tuple[str, ...]] = Field(default_factory=lambda: dict(DEFAULT_TIER_MODELS))
    experts: dict[JobKind, tuple[str, ...]] = Field(default_factory=lambda: dict(DEFAULT_EXPERTS))

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Policy:
        if self.small_max_difficulty > self.medium_max_difficulty:
            raise ValueError("small_max_difficulty must not exceed medium_max_difficulty")
        missing = [tier.value for tier in self.ladder if not self.tier_models.get(tier)]
        if missing:
            raise ValueError(f"tiers without models: {', '.join(missing)}")
        return self
