"""Specialists by intent: which specialist takes a job, what the decision records, and the
declarations refused at load."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tierflow.routing.analysis import Analysis, analyze_rules
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import Strategy, decide, first_tier_choices
from tierflow.routing.experts import ExpertOutcome, Prompt
from tierflow.routing.kinds.prompts import expert_prompt
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry
from tierflow.routing.kinds.spec import (
    CheckSpec,
    ExpertSpec,
    ExpertType,
    ExpertWhen,
    KindSpec,
    SpecialistSpec,
)
from tierflow.routing.policy import Policy
from tierflow.routing.specialists import choose_specialist
from tierflow.routing.stages import SemanticGuess, analyze
from tierflow.routing.states import Tier
from tierflow.routing.verdict import VerdictAction, judge
from tierflow.worker.cli_explain import specialist_line

SUPPORT = builtin_registry().get("support")
POLICY = Policy()


def _analysis(intent: str, stage: str = "rules") -> Analysis:
    return Analysis(intent, "support", 0.2, 0.0, True, 0.8, stage)


@pytest.mark.parametrize(
    ("intent", "specialist"),
    [
        ("refund", "billing_refunds"),
        ("billing", "billing_refunds"),
        ("technical", "technical_issues"),
        ("account", "account_access"),
        ("account_closure", "account_access"),
        ("shipping", "shipping_returns"),
        ("returns", "shipping_returns"),
    ],
)
def test_each_support_intent_selects_its_specialist(intent: str, specialist: str) -> None:
    choice = choose_specialist(SUPPORT, _analysis(intent))
    assert choice is not None and (choice.specialist, choice.intent, choice.stage) == (
        specialist,
        intent,
        "rules",
    )


@pytest.mark.parametrize("intent", ["warranty", "general", "something_no_kind_declares"])
def test_an_intent_no_specialist_takes_goes_to_the_general_one(intent: str) -> None:
    choice = choose_specialist(SUPPORT, _analysis(intent))
    assert choice is not None and choice.specialist == "general_support"
    assert f"no specialist for intent {intent}" in choice.reason


def test_a_kind_without_specialists_chooses_none_and_its_decision_names_none() -> None:
    prompt = builtin_registry().get("prompt")
    analysis = Analysis("prompt", "prompt", 0.2, 0.0, False, 0.8, "rules")
    assert choose_specialist(prompt, analysis) is None
    decision = decide(prompt, analysis, POLICY)
    assert (decision.specialist, decision.intent, decision.stage) == (None, None, None)


def test_the_rules_route_a_refund_and_a_crash_to_different_specialists() -> None:
    refund = analyze_rules(SUPPORT, {"text": "Please refund my order, it arrived torn."})
    crash = analyze_rules(SUPPORT, {"text": "The app crashes every time I open my basket."})
    first, second = decide(SUPPORT, refund, POLICY), decide(SUPPORT, crash, POLICY)
    assert (first.specialist, first.intent, first.stage) == ("billing_refunds", "refund", "rules")
    assert (second.specialist, second.intent, second.stage) == ("technical_issues", "technical", "rules")
    assert first.reasons[0] == "intent refund (rules) selects the specialist billing_refunds"
    body = first.as_dict()
    assert (body["specialist"], body["intent"], body["stage"]) == ("billing_refunds", "refund", "rules")


# Rules alone are unsure of this one (a hard marker): the semantic stage is asked.
UNSURE = {"text": "Something about an integration and my order, multiple things really."}


def test_an_out_of_scope_job_goes_to_the_general_specialist_decided_by_the_semantic_stage() -> None:
    rules = analyze_rules(SUPPORT, UNSURE)
    assert rules.confidence < POLICY.rules_confidence and rules.intent == "technical"

    def far(text: str) -> SemanticGuess:
        return SemanticGuess("warranty", 0.12, decided=False, out_of_scope=True)

    analysis = analyze(SUPPORT, UNSURE, POLICY, semantic=far)
    assert analysis.out_of_scope and analysis.stage == "rules"
    decision = decide(SUPPORT, analysis, POLICY)
    assert (decision.specialist, decision.stage) == ("general_support", "semantic")
    assert "out of scope" in decision.reasons[0]


def test_a_close_call_is_not_out_of_scope_and_a_semantic_decision_names_its_stage() -> None:
    def close(text: str) -> SemanticGuess:
        return SemanticGuess("refund", 0.61, decided=False, runner_up="billing")

    unsure = analyze(SUPPORT, UNSURE, POLICY, semantic=close)
    assert not unsure.out_of_scope
    assert decide(SUPPORT, unsure, POLICY).specialist == "technical_issues", "the rules' intent stands"

    def sure(text: str) -> SemanticGuess:
        return SemanticGuess("returns", 0.9, decided=True)

    decided = decide(SUPPORT, analyze(SUPPORT, UNSURE, POLICY, semantic=sure), POLICY)
    assert (decided.specialist, decided.intent, decided.stage) == ("shipping_returns", "returns", "semantic")


def test_the_llm_stage_names_the_intent_among_the_kinds_declared_intents() -> None:
    asked: list[str] = []

    def llm(prompt: Prompt) -> str:
        asked.append(prompt.system)
        answer = {
            "intent": "account_closure",
            "difficulty": 0.3,
            "risk": 0.1,
            "confidence": 0.9,
            "reasons": ["x"],
        }
        return json.dumps(answer)

    policy = Policy(llm_analysis=True)
    analysis = analyze(SUPPORT, UNSURE, policy, llm=llm)
    decision = decide(SUPPORT, analysis, policy)
    assert (decision.specialist, decision.intent, decision.stage) == (
        "account_access",
        "account_closure",
        "llm",
    )
    assert "account_closure" in asked[0] and "support," not in asked[0], "the kind's intents, not its name"
    assert not analysis.out_of_scope


def test_an_escalated_attempt_keeps_its_specialist() -> None:
    analysis = _analysis("refund")
    first = decide(SUPPORT, analysis, POLICY)
    later = decide(SUPPORT, analysis, POLICY, floor=Tier.MEDIUM)
    assert later.tier is Tier.MEDIUM and later.specialist == first.specialist == "billing_refunds"
    assert later.experts == first.experts


ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def _desk(*specialists: SpecialistSpec, intents: tuple[str, ...] = ()) -> KindSpec:
    """A small kind with two model experts and a rule, and the specialists given."""
    return KindSpec(
        name="desk",
        text="{text}",
        intents=intents,
        experts=(
            ExpertSpec(name="writer", type=ExpertType.MODEL, prompt="{text}", answer_schema=ANSWER),
            ExpertSpec(name="lawyer", type=ExpertType.MODEL, prompt="{text}", answer_schema=ANSWER),
            ExpertSpec(name="words", type=ExpertType.RULE, rule="keywords", options={"words": ["sue"]}),
            ExpertSpec(
                name="checker",
                type=ExpertType.MODEL,
                prompt="{text}",
                answer_schema=ANSWER,
                answers=False,
                when=ExpertWhen.VERIFY,
            ),
        ),
        specialists=specialists,
    )


LEGAL = SpecialistSpec(
    name="legal",
    intents=("legal",),
    experts=("lawyer", "words"),
    instructions={"lawyer": "Quote the contract clause you rely on."},
    sections=("legal",),
    checks=(CheckSpec(type="confidence", threshold=0.9),),
    min_tier=Tier.MEDIUM,
    max_tier=Tier.MEDIUM,
)
GENERAL = SpecialistSpec(name="front_desk", general=True)


def _registered(kind: KindSpec) -> KindSpec:
    return builtin_registry().with_kinds([kind]).get(kind.name)


def test_the_decision_runs_the_specialists_experts_within_its_tier_limits() -> None:
    desk = _registered(_desk(LEGAL, GENERAL))
    legal = Analysis("legal", "desk", 0.1, 0.0, False, 0.8, "rules")
    first = decide(desk, legal, POLICY)
    assert first.experts == ("lawyer", "words") and first.strategy is Strategy.DIRECT
    assert first.tier is Tier.MEDIUM and "min_tier: started on medium instead of small" in first.reasons
    assert first_tier_choices(desk, legal, POLICY, DecisionContext(job_id="j-1")) == {Tier.MEDIUM: 1.0}
    assert decide(desk, replace(legal, difficulty=0.9), POLICY).tier is Tier.MEDIUM, "capped"
    beyond = decide(desk, legal, POLICY, floor=Tier.LARGE)
    assert beyond.strategy is Strategy.REVIEW and beyond.specialist == "legal"
    other = decide(desk, replace(legal, intent="chat"), POLICY)
    assert other.specialist == "front_desk" and other.experts == ("writer", "lawyer", "words")
    assert other.tier is Tier.SMALL


def test_the_specialists_checks_judge_its_attempts_and_its_instruction_is_in_the_prompt() -> None:
    desk = _registered(_desk(LEGAL, GENERAL))
    outcomes = [ExpertOutcome("lawyer", True, {"answer": "pay"}, 0.8), ExpertOutcome("words", False, {}, 1.0)]
    as_legal = desk.as_specialist("legal")
    assert judge(desk, outcomes, Tier.MEDIUM, POLICY).action is VerdictAction.ACCEPT
    held = judge(as_legal, outcomes, Tier.MEDIUM, POLICY)
    assert held.action is VerdictAction.NEEDS_REVIEW, "0.8 is below the specialist's 0.9, no tier above"
    assert any("below 0.90" in reason for reason in held.reasons)
    lawyer = desk.expert("lawyer")
    assert lawyer is not None
    told = expert_prompt(desk, lawyer, {"text": "x"}, {"instruction": LEGAL.instructions["lawyer"]})
    assert "Quote the contract clause you rely on." in told.system
    assert "Quote" not in expert_prompt(desk, lawyer, {"text": "x"}, {}).system


def test_the_support_drafter_is_told_its_specialists_role() -> None:
    drafter = SUPPORT.expert("drafter")
    billing = SUPPORT.specialist("billing_refunds")
    assert drafter is not None and billing is not None and billing.sections == ("billing",)
    prompt = expert_prompt(
        SUPPORT, drafter, {"text": "refund"}, {"instruction": billing.instructions["drafter"]}
    )
    assert "billing and refunds specialist" in prompt.system


@pytest.mark.parametrize(
    ("specialists", "intents", "expected"),
    [
        ((LEGAL,), (), "specialists[0]: a kind with specialists needs a general one"),
        (
            (LEGAL, GENERAL, GENERAL.model_copy(update={"name": "other"})),
            (),
            "specialists[2].general: a second",
        ),
        ((LEGAL, GENERAL), ("billing",), "specialists[0].intents: names intent 'legal', not an intent"),
        (
            (LEGAL.model_copy(update={"experts": ("scribe",)}), GENERAL),
            (),
            "specialists[0].experts: names 'scribe'",
        ),
        (
            (LEGAL.model_copy(update={"experts": ("checker",)}), GENERAL),
            (),
            "names no expert that always runs",
        ),
        ((LEGAL.model_copy(update={"instructions": {"words": "x"}}), GENERAL), (), "instructions.words"),
        (
            (LEGAL.model_copy(update={"instructions": {"writer": "x"}}), GENERAL),
            (),
            "not one of the specialist's",
        ),
        ((LEGAL.model_copy(update={"intents": ()}), GENERAL), (), "selects no intent"),
        (
            (LEGAL, GENERAL.model_copy(update={"intents": ("legal",)})),
            (),
            "'legal' already selects the specialist",
        ),
        (
            (LEGAL.model_copy(update={"checks": (CheckSpec(type="nope"),)}), GENERAL),
            (),
            "specialists[0].checks[0].type: unknown check 'nope'",
        ),
        (
            (
                LEGAL.model_copy(update={"checks": (CheckSpec(type="required", experts=("writer",)),)}),
                GENERAL,
            ),
            (),
            "specialists[0].checks[0].experts: names 'writer', not an expert this specialist runs",
        ),
    ],
)
def test_a_plug_in_kind_with_bad_specialists_is_refused_naming_the_field(
    specialists: tuple[SpecialistSpec, ...], intents: tuple[str, ...], expected: str
) -> None:
    with pytest.raises(ValueError) as caught:
        KindRegistry([_desk(*specialists, intents=intents)])
    assert "kind 'desk': " in str(caught.value) and expected in str(caught.value)


def test_specialist_names_and_tier_order_are_checked_on_the_declaration() -> None:
    with pytest.raises(ValueError, match="min_tier large is above max_tier small"):
        SpecialistSpec(name="x", intents=("a",), min_tier=Tier.LARGE, max_tier=Tier.SMALL)
    with pytest.raises(ValueError, match="specialists named twice: front_desk"):
        _desk(GENERAL, GENERAL)


def test_explain_names_the_specialist_the_intent_and_the_stage() -> None:
    body = decide(SUPPORT, _analysis("shipping", "semantic"), POLICY).as_dict()
    assert (
        specialist_line(body) == "specialist shipping_returns: intent shipping, decided by the semantic stage"
    )
    assert specialist_line({"tier": "small"}) is None
