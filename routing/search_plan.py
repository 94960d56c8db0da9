"""A strategy search as the policy declares it: which strategies to try, in what order, how far.

Pure data (pydantic and the standard library). `Policy.search` holds one plan per job
kind ("support") and, optionally, per kind and intent ("support/refund"); routing/search.py
walks a plan. A plan is data so that reflect and the coach can propose a better order.

An order names strategies, cheapest first; a step may name the tier it runs on
("verify@large"), else it runs on the tier of the step before it:

    direct      the answering experts alone, without the knowledge base
    experts     the kind's experts as declared (what a job without a search runs)
    retrieval   every answering expert grounded in the knowledge base's articles
    verify      the kind's experts and its independent verifiers
    clarify     no model: the job ends needs_clarification with a question for the customer
    review      no model: the job ends needs_review, held for a person

clarify and review end the job, so either may only be an order's last step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tierflow.routing.states import Tier

SEARCH_STRATEGIES = ("direct", "experts", "retrieval", "verify", "clarify", "review")
ENDING_STRATEGIES = frozenset({"clarify", "review"})
DEFAULT_MAX_STEPS = 4
DEFAULT_QUESTION = (
    "Could you tell us a little more about what you need: what you were trying to do, what "
    "happened instead, and any reference (order, invoice or account) that applies?"
)
# "kind" or "kind/intent": a kind's name, then optionally an intent (no "/" or spaces in it).
PLAN_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}(/[^/\s]+)?$")


@dataclass(frozen=True)
class SearchStep:
    strategy: str
    tier: Tier | None = None  # None: the tier of the step before (the first: the decision's)

    def __str__(self) -> str:
        return self.strategy if self.tier is None else f"{self.strategy}@{self.tier.value}"

    @property
    def ends(self) -> bool:
        """Whether the step ends the job without a model call (clarify, review)."""
        return self.strategy in ENDING_STRATEGIES


def parse_step(entry: str) -> SearchStep:
    """One order entry ("verify", "verify@large"); ValueError naming what is wrong."""
    strategy, _, tier = entry.partition("@")
    if strategy not in SEARCH_STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy!r} in {entry!r} (known: {', '.join(SEARCH_STRATEGIES)})"
        )
    if not tier:
        if "@" in entry:
            raise ValueError(f"{entry!r} names no tier after '@'")
        return SearchStep(strategy)
    if tier not in {t.value for t in Tier}:
        raise ValueError(f"unknown tier {tier!r} in {entry!r} (known: {', '.join(t.value for t in Tier)})")
    if strategy in ENDING_STRATEGIES:
        raise ValueError(f"{entry!r}: {strategy} calls no model, so it takes no tier")
    return SearchStep(strategy, Tier(tier))


class SearchPlan(BaseModel):
    """The order of strategies a job tries while its results are judged uncertain, and the bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order: tuple[str, ...] = Field(min_length=1)
    # Attempts that call a model, the first included; clarify and review steps are not counted.
    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1, le=16)
    # What a clarify step asks the customer; "{intent}" is replaced by the job's intent.
    question: str = Field(default=DEFAULT_QUESTION, min_length=1, max_length=2000)

    @field_validator("order")
    @classmethod
    def _valid_order(cls, order: tuple[str, ...]) -> tuple[str, ...]:
        steps = [parse_step(entry) for entry in order]
        twice = sorted({entry for entry in order if order.count(entry) > 1})
        if twice:
            raise ValueError(f"steps named twice: {', '.join(twice)}")
        early = [str(step) for step in steps[:-1] if step.ends]
        if early:
            raise ValueError(f"{', '.join(early)} ends the job, so it may only be the order's last step")
        return order

    def steps(self) -> tuple[SearchStep, ...]:
        return tuple(parse_step(entry) for entry in self.order)

    def ask(self, intent: str) -> str:
        return self.question.replace("{intent}", intent)


def valid_plan_key(key: str) -> str:
    """A `Policy.search` key, checked: "kind" or "kind/intent"."""
    if not PLAN_KEY.match(key):
        raise ValueError(f"search key {key!r} is not 'kind' or 'kind/intent'")
    return key


def plan_for(plans: dict[str, SearchPlan], kind: str, intent: str) -> tuple[str, SearchPlan] | None:
    """The plan a job of `kind` with `intent` follows, and its key: the intent's, else the kind's."""
    for key in (f"{kind}/{intent}", kind):
        if key in plans:
            return key, plans[key]
    return None
