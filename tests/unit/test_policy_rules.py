"""Declarative routing rules in the policy: the first stage of the analysis."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tierflow.routing.analysis import analyze_rules
from tierflow.routing.decision import decide
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.policy import Policy
from tierflow.routing.rules import RoutingRule
from tierflow.routing.states import Tier

KINDS = builtin_registry()
SUPPORT = KINDS.get("support")
DOCUMENT = KINDS.get("document")
PROMPT = KINDS.get("prompt")

VIP = RoutingRule(name="vip tenant", metadata={"tenant": "acme"}, difficulty=0.5, confidence=0.95)
CODE = RoutingRule(
    name="stack traces",
    kinds=("support",),
    pattern=r"traceback|exception in thread",
    intent="technical",
    difficulty=0.8,
)
CHARGEBACK = RoutingRule(
    name="chargebacks", keywords=("chargeback", "charge back"), risk=0.9, intent="billing"
)
SHORT = RoutingRule(name="short prompts", kinds=("prompt",), max_tokens=20, difficulty=0.05)
POLICY = Policy(rules=(VIP, CODE, CHARGEBACK, SHORT))


def test_the_first_matching_rule_decides_with_its_confidence() -> None:
    analysis = analyze_rules(SUPPORT, {"text": "Where is my parcel?"}, POLICY.rules, {"tenant": "acme"})
    assert (analysis.difficulty, analysis.confidence) == (0.5, 0.95)
    assert analysis.reasons[-1] == "rule vip tenant matched"
    assert decide(SUPPORT, analysis, POLICY).tier is Tier.MEDIUM


def test_pattern_keywords_kinds_and_length_are_conditions() -> None:
    trace = analyze_rules(SUPPORT, {"text": "I get a Traceback when I pay"}, POLICY.rules)
    assert (trace.intent, trace.difficulty) == ("technical", 0.8)
    not_support = analyze_rules(PROMPT, {"prompt": "Explain this Traceback"}, POLICY.rules, tokens=50)
    assert "rule stack traces matched" not in not_support.reasons
    charge = analyze_rules(SUPPORT, {"text": "I will file a charge back with my bank"}, POLICY.rules)
    assert (charge.intent, charge.risk) == ("billing", 0.9)
    short = analyze_rules(PROMPT, {"prompt": "2 + 2?"}, POLICY.rules, tokens=5)
    long = analyze_rules(PROMPT, {"prompt": "2 + 2?"}, POLICY.rules, tokens=500)
    assert short.difficulty == 0.05 and "rule short prompts matched" not in long.reasons


def test_a_rule_cannot_hide_risk_the_built_in_signals_saw() -> None:
    calm = RoutingRule(name="calm", keywords=("lawyer",), risk=0.0)
    analysis = analyze_rules(SUPPORT, {"text": "My lawyer will call."}, (calm,))
    assert analysis.risk > 0


def test_content_signals_code_arithmetic_long_documents() -> None:
    code = analyze_rules(PROMPT, {"prompt": "Why does this fail?\n```\nx = 1/0\n```"})
    assert "code block" in code.reasons
    assert "arithmetic" in analyze_rules(PROMPT, {"prompt": "What is 17 * 23?"}).reasons
    assert "long document" in analyze_rules(DOCUMENT, {"text": "word " * 500}).reasons


def test_a_pattern_that_does_not_compile_is_refused_with_its_field() -> None:
    with pytest.raises(ValidationError, match="pattern does not compile"):
        RoutingRule(name="broken", pattern="([unclosed")
