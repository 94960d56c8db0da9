"""The routing policy: versioned thresholds, tier models, ladder, expert sets and learned scorers.

Pure data. The store keeps its versions; `reflect` (routing/reflect.py) learns new ones.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tierflow.routing.experiments import Experiment
from tierflow.routing.learning import LearnedRouting, LearningSettings
from tierflow.routing.rules import RoutingRule
from tierflow.routing.search_plan import SearchPlan, valid_plan_key
from tierflow.routing.states import TIER_LADDER, Tier

DEFAULT_TIER_LATENCY_S: dict[Tier, float] = {Tier.SMALL: 2.0, Tier.MEDIUM: 5.0, Tier.LARGE: 12.0}

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
    # A stricter or looser acceptance threshold for some tiers; others use accept_quality.
    accept_quality_by_tier: dict[Tier, float] = Field(default_factory=dict)
    review_risk: float = Field(default=0.7, ge=0, le=1)
    refund_limit_usd: float = Field(default=200.0, ge=0)
    ladder: tuple[Tier, ...] = TIER_LADDER
    tier_models: dict[Tier, tuple[str, ...]] = Field(default_factory=lambda: dict(DEFAULT_TIER_MODELS))
    # The experts a job of each kind fans out to; a kind not named here takes the ones it declares.
    experts: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # The highest tier a job of each kind may reach, escalations included; above it: review.
    # A kind not named here takes its declared max_tier, else the ladder's top.
    max_tier: dict[str, Tier] = Field(default_factory=dict)
    # Straight to a person, without any model call, when the risk reaches review_risk.
    review_high_risk: bool = False
    # Prompts at or above this difficulty get a verifier beside the answerer (above 1: never).
    verify_difficulty: float = Field(default=1.01, ge=0)
    # Expected seconds for an attempt at each tier, for jobs with a deadline.
    tier_latency_s: dict[Tier, float] = Field(default_factory=lambda: dict(DEFAULT_TIER_LATENCY_S))
    # Context window in tokens per "provider:model"; a model not listed takes any size.
    context_windows: dict[str, int] = Field(default_factory=dict)
    # Capabilities per model, and what each job kind requires; a model not listed has all.
    model_capabilities: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    kind_capabilities: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # Output tokens assumed per model call when estimating an attempt's cost.
    expected_output_tokens: int = Field(default=300, gt=0)
    experiments: tuple[Experiment, ...] = ()
    # Analysis: the rules decide alone at or above this confidence; below it the semantic
    # stage, then (when enabled) a small-tier model are asked.
    rules_confidence: float = Field(default=0.75, ge=0, le=1)
    # Declarative rules, tried in order before any built-in signal decides (routing/rules.py).
    rules: tuple[RoutingRule, ...] = ()
    llm_analysis: bool = False
    intents: tuple[str, ...] = ()  # intents an analysis may name; empty: the built-in ones
    # How `reflect` learns from feedback, and what it learned per job class (routing/learning.py).
    learning: LearningSettings = Field(default_factory=LearningSettings)
    learned: dict[str, LearnedRouting] = Field(default_factory=dict)
    # Sampled judging (routing/judging.py): this share of accepted answers, picked by job id, is
    # graded by a judge on the top tier, within judge_budget_usd a day (UTC); 0: none.
    judge_share: float = Field(default=0.0, ge=0, le=1)
    judge_budget_usd: float = Field(default=1.0, ge=0)
    # Strategy search (routing/search_plan.py), per kind ("support") or kind and intent
    # ("support/refund"): a job whose plan is named tries its strategies in order while its
    # results are judged uncertain. A kind named nowhere here escalates by tier alone.
    search: dict[str, SearchPlan] = Field(default_factory=dict)

    def threshold(self, tier: Tier) -> float:
        return self.accept_quality_by_tier.get(tier, self.accept_quality)

    def cap(self, kind: str, declared: Tier | None = None) -> Tier:
        """The highest tier for the kind: the policy's, else the kind's declared one on this ladder."""
        if kind in self.max_tier:
            return self.max_tier[kind]
        if declared is not None and declared in self.ladder:
            return declared
        return self.ladder[-1]

    def with_overrides(self, overrides: dict[str, object]) -> Policy:
        """This policy with some fields replaced, validated; experiments are not inherited."""
        body = self.model_dump(mode="json")
        body.update(overrides)
        body["experiments"] = []
        return Policy.model_validate(body)

    @field_validator("search")
    @classmethod
    def _search_keys(cls, search: dict[str, SearchPlan]) -> dict[str, SearchPlan]:
        for key in search:
            valid_plan_key(key)
        return search

    @model_validator(mode="after")
    def _search_tiers(self) -> Policy:
        for key, plan in self.search.items():
            off = [
                str(step) for step in plan.steps() if step.tier is not None and step.tier not in self.ladder
            ]
            if off:
                raise ValueError(f"search.{key}.order names tiers not on the ladder: {', '.join(off)}")
        return self

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Policy:
        if self.small_max_difficulty > self.medium_max_difficulty:
            raise ValueError("small_max_difficulty must not exceed medium_max_difficulty")
        if not self.ladder or list(self.ladder) != sorted(set(self.ladder), key=TIER_LADDER.index):
            raise ValueError("ladder must name tiers once each, cheapest first")
        outside = sorted({tier.value for tier in self.max_tier.values() if tier not in self.ladder})
        if outside:
            raise ValueError(f"max_tier names tiers not on the ladder: {', '.join(outside)}")
        missing = [tier.value for tier in self.ladder if not self.tier_models.get(tier)]
        if missing:
            raise ValueError(f"tiers without models: {', '.join(missing)}")
        return self


def policy_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(field path, old value, new value) for every leaf that differs, in field order."""
    changes: list[tuple[str, Any, Any]] = []
    for key in list(dict.fromkeys([*old, *new])):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.extend(policy_diff(a, b, f"{path}."))
        elif a != b:
            changes.append((path, a, b))
    return changes
