"""What a job kind is: its payload, its text, its experts, its checks, its review rules, its routing.

A `KindSpec` is a frozen value. A kinds file (routing/kinds/files.py) or a Python
plug-in (routing/kinds/builtin.py for the three kinds tierflow ships) declares it;
the registry (routing/kinds/registry.py) holds the kinds in force. Everything
outside `routing/kinds/` reads a job's kind through a spec and never by its name.

Pure: pydantic and the standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tierflow.routing.experts import ExpertOutput, Prompt
from tierflow.routing.policy import Policy
from tierflow.routing.rules import RoutingRule
from tierflow.routing.states import TIER_LADDER, Tier

NAME = r"^[a-z][a-z0-9_]{0,31}$"
MAX_TEMPLATE_BYTES = 32 * 1024

# A model expert's prompt, built by a Python plug-in: (payload, context) -> Prompt; the context's
# "articles" are the knowledge base's best matches when the expert is grounded, its "instruction"
# the job's specialist's addition to the expert's own (SpecialistSpec.instructions).
PromptBuilder = Callable[[dict[str, Any], Mapping[str, Any]], Prompt]
# A rule expert: (payload, the job's text, policy, the expert's options) -> its output.
Rule = Callable[[dict[str, Any], str, Policy, Mapping[str, Any]], ExpertOutput]
# An offline model's answer to an expert's prompt: (the user message, the model's strength) -> JSON text.
OfflineAnswer = Callable[[str, float], str]
# A payload validator: the (field path, reason) of each problem; empty when the payload is valid.
PayloadValidator = Callable[[dict[str, Any]], list[tuple[str, str]]]


class ExpertType(str, Enum):
    MODEL = "model"  # asks the tier's models, structured output against its answer schema
    RETRIEVER = "retriever"  # searches the knowledge folder for the job's text
    RULE = "rule"  # runs a named built-in extractor or validator, no model


class ExpertWhen(str, Enum):
    ALWAYS = "always"  # in every attempt's chord
    VERIFY = "verify"  # added beside the others when the difficulty reaches policy.verify_difficulty
    MERGE = "merge"  # only in a decomposed job's merge: it writes one answer from its children's


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class ExpertSpec(_Frozen):
    name: str = Field(pattern=NAME)
    type: ExpertType
    tiers: tuple[Tier, ...] = ()  # the tiers it runs on; empty: every tier
    answers: bool = True  # False: it checks the others (a verifier); its output is not the answer
    when: ExpertWhen = ExpertWhen.ALWAYS
    # model experts
    task: str | None = None  # the task named in the system prompt; default "<kind>.<expert>"
    instruction: str = ""
    prompt: str | None = None  # a template over the payload's fields: the user message
    answer_schema: dict[str, Any] | None = None  # JSON Schema of the answer (confidence is added)
    grounded: bool = False  # the knowledge base's best matches go into the prompt
    max_tokens: int = Field(default=400, gt=0, le=8192)
    build: PromptBuilder | None = Field(default=None, exclude=True)
    # how the fake models answer a plug-in's prompt offline; a declared prompt is answered from its schema
    offline: OfflineAnswer | None = Field(default=None, exclude=True)
    # rule experts
    rule: str | None = None  # a name in the rule library
    options: dict[str, Any] = Field(default_factory=dict)
    run: Rule | None = Field(default=None, exclude=True)  # resolved from `rule` by the registry

    @property
    def uses_model(self) -> bool:
        return self.type is ExpertType.MODEL

    def on_tier(self, tier: Tier) -> bool:
        return not self.tiers or tier in self.tiers


class OnFail(str, Enum):
    ESCALATE = "escalate"  # the next tier; above the last, review
    REVIEW = "review"  # hold for a person
    PENALTY = "penalty"  # lower the quality by the check's penalty for each problem
    SCALE = "scale"  # multiply the quality by the check's factor


class CheckSpec(_Frozen):
    """One acceptance check from the library (routing/kinds/checks.py), with its arguments."""

    type: str
    fields: tuple[str, ...] = ()
    experts: tuple[str, ...] = ()  # the experts whose outputs it reads; empty: the merged answer
    values: tuple[str, ...] = ()  # for one_of
    pattern: str | None = None  # for pattern
    tolerance: float = Field(default=0.0, ge=0)  # for agree (numbers) and reconcile
    items: str | None = None  # for reconcile: a list field of amounts
    tax: str | None = None  # for reconcile
    total: str | None = None  # for reconcile
    threshold: float | None = Field(default=None, ge=0, le=1)  # for confidence
    on_fail: OnFail = OnFail.ESCALATE
    penalty: float = Field(default=0.2, ge=0, le=1)
    factor: float = Field(default=0.5, ge=0, le=1)
    # (spec, routing.kinds.checks.CheckInput) -> [Problem]: resolved from `type` by the registry
    run: Callable[..., Any] | None = Field(default=None, exclude=True)


class ReviewRule(_Frozen):
    """When a judged attempt goes to a person instead of being accepted."""

    type: str  # words | output_value | output_at_least | budget
    words: tuple[str, ...] = ()  # words: any of them in the job's text
    expert: str | None = None  # output_*: one expert's output; None: the merged answer
    field: str | None = None
    values: tuple[str, ...] = ()  # output_value: the field's value is one of these
    at_least: float | None = None  # output_at_least: None takes the policy's review_risk
    reasons_field: str | None = None  # a list field whose items are the reason's details
    label: str | None = None
    max_usd: float | None = Field(default=None, ge=0)  # budget: estimated attempt cost above it

    @model_validator(mode="after")
    def _known(self) -> ReviewRule:
        if self.type not in REVIEW_TYPES:
            raise ValueError(f"unknown review rule type {self.type!r} (known: {', '.join(REVIEW_TYPES)})")
        return self


REVIEW_TYPES = ("words", "output_value", "output_at_least", "budget")


class KindRouting(_Frozen):
    """A kind's routing defaults; the policy's own settings for the kind override them."""

    max_tier: Tier | None = None
    min_tier: Tier | None = None  # the cheapest tier a first attempt starts on (the pin aside)
    intents: bool = False  # the built-in intent signals name the intent; else the kind's name
    answered_by: str | None = None  # a rule expert whose `rule_accept` means no model is needed
    rules: tuple[RoutingRule, ...] = ()  # tried after the policy's own rules
    semantic_routes: str | None = None  # a routes file for the semantic stage
    budget_usd: float | None = Field(default=None, ge=0)  # a job's budget when it gives none
    deadline_s: float | None = Field(default=None, gt=0)  # seconds from submission, when none given
    capabilities: tuple[str, ...] = ()  # what a model must offer for jobs of the kind


class SpecialistSpec(_Frozen):
    """A named expert set of a kind, chosen by the job's intent (routing/specialists.py).

    The general one (`general`) takes every job no other specialist's intents select, and
    every job the semantic stage finds out of scope. Its own parts replace or add to the kind's:
    the experts it fans out to, an instruction per model expert added to that expert's prompt,
    the knowledge-base sections its retriever and grounded experts search, checks added to the
    kind's, and tier limits that narrow the kind's own. The policy's settings for the kind
    override a specialist's as they override the kind's: its max_tier the limit, its experts
    the experts."""

    name: str = Field(pattern=NAME)
    description: str = ""
    intents: tuple[str, ...] = ()  # the intents that select it
    general: bool = False
    experts: tuple[str, ...] = ()  # names of the kind's experts; empty: the kind's own
    instructions: dict[str, str] = Field(default_factory=dict)  # model expert -> instruction added
    sections: tuple[str, ...] = ()  # knowledge-base sections it retrieves from; empty: every one
    checks: tuple[CheckSpec, ...] = ()  # added to the kind's checks
    min_tier: Tier | None = None
    max_tier: Tier | None = None

    @model_validator(mode="after")
    def _tiers_in_order(self) -> SpecialistSpec:
        low, high = self.min_tier, self.max_tier
        if low is not None and high is not None and TIER_LADDER.index(low) > TIER_LADDER.index(high):
            raise ValueError(f"min_tier {low.value} is above max_tier {high.value}")
        return self


CONCATENATE = "concatenate"


class DecomposeSpec(_Frozen):
    """Whether and how a job of the kind with several independent asks becomes a parent with one
    child job per ask (routing/decompose.py): each child classified, routed and judged on its own,
    the parent merged from their answers once every child has ended."""

    max_subtasks: int = Field(default=4, ge=2, le=16)
    depth: int = Field(default=1, ge=1, le=3)  # 1: a child never decomposes further
    # "concatenate": the children's answers as sections, no model; else a model expert of the
    # kind that runs only when merging (when = "merge") and writes one answer from the parts
    merge: str = CONCATENATE
    min_words: int = Field(default=3, ge=1)  # a part shorter than this is not an ask of its own
    # When the LLM stage proposes sub-tasks where the rules find no split (and the text looks
    # like several asks): "unsure", when the analysis itself needed the LLM stage; "always";
    # "never".
    llm: Literal["unsure", "always", "never"] = "unsure"


class KindSpec(_Frozen):
    name: str = Field(pattern=NAME)
    description: str = ""
    # The intents its analysis names (rules, semantic routes, the LLM stage's choices); empty:
    # not declared, and its specialists may name any intent.
    intents: tuple[str, ...] = ()
    payload_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    text: str  # a template over the payload's fields: what routing reads
    experts: tuple[ExpertSpec, ...]
    checks: tuple[CheckSpec, ...] = ()
    review: tuple[ReviewRule, ...] = ()
    routing: KindRouting = Field(default_factory=KindRouting)
    answer_field: str | None = None  # the output field that is the answer's text
    chat_field: str | None = None  # the payload field a chat message fills; None: not a chat kind
    merge: tuple[str, ...] = ()  # dict fields merged across experts: the first declared wins per key
    specialists: tuple[SpecialistSpec, ...] = ()  # none: every job runs the kind's own experts
    decompose: DecomposeSpec | None = None  # None: a job is never split
    builtin: bool = False
    validate_payload: PayloadValidator | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _experts_unique(self) -> KindSpec:
        names = [expert.name for expert in self.experts]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"experts named twice: {', '.join(twice)}")
        if not any(e.when is ExpertWhen.ALWAYS for e in self.experts):
            raise ValueError("a kind needs at least one expert that always runs")
        return self

    @model_validator(mode="after")
    def _merge_known(self) -> KindSpec:
        if self.decompose is not None and self.chat_field is None:
            raise ValueError("decompose needs chat_field: the payload field a child's ask fills")
        merge = self.decompose.merge if self.decompose is not None else CONCATENATE
        if merge == CONCATENATE:
            return self
        expert = self.expert(merge)
        if expert is None or not expert.uses_model or expert.when is not ExpertWhen.MERGE:
            raise ValueError(
                f"decompose.merge names {merge!r}: not {CONCATENATE!r} nor a model expert of this kind "
                'with when = "merge"'
            )
        return self

    @model_validator(mode="after")
    def _specialists_unique(self) -> KindSpec:
        names = [specialist.name for specialist in self.specialists]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"specialists named twice: {', '.join(twice)}")
        return self

    def __hash__(self) -> int:  # a kind is known by its name; its schemas are dicts
        return hash(self.name)

    def expert(self, name: str) -> ExpertSpec | None:
        return next((expert for expert in self.experts if expert.name == name), None)

    def default_experts(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.experts if e.when is ExpertWhen.ALWAYS)

    def verify_experts(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.experts if e.when is ExpertWhen.VERIFY)

    def retrieves(self) -> bool:
        return any(e.type is ExpertType.RETRIEVER or e.grounded for e in self.experts)

    def specialist(self, name: str | None) -> SpecialistSpec | None:
        return next((s for s in self.specialists if s.name == name), None) if name else None

    def general_specialist(self) -> SpecialistSpec | None:
        return next((s for s in self.specialists if s.general), None)

    def as_specialist(self, name: str | None) -> KindSpec:
        """The kind as its specialist `name` runs it: only the specialist's experts (when it names
        them), its checks after the kind's, its tier limits. The kind itself when `name` is none
        of its specialists."""
        specialist = self.specialist(name)
        if specialist is None:
            return self
        experts = self.experts
        if specialist.experts:
            experts = tuple(e for e in self.experts if e.name in specialist.experts)
        rank = TIER_LADDER.index
        highs = [t for t in (self.routing.max_tier, specialist.max_tier) if t is not None]
        lows = [t for t in (self.routing.min_tier, specialist.min_tier) if t is not None]
        limits = {
            "max_tier": min(highs, key=rank, default=None),
            "min_tier": max(lows, key=rank, default=None),
        }
        routing = self.routing.model_copy(update=limits)
        # the view has no specialists of its own: choosing again from it changes nothing
        checks = (*self.checks, *specialist.checks)
        update = {"experts": experts, "checks": checks, "routing": routing, "specialists": ()}
        return self.model_copy(update=update)
