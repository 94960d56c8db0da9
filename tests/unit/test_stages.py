"""The staged analysis: rules, then the semantic stage, then an LLM, each only when needed."""

from __future__ import annotations

import json

from tierflow.routing.decision import decide
from tierflow.routing.experts import Prompt
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.policy import Policy
from tierflow.routing.stages import SemanticGuess, analyze
from tierflow.routing.states import Tier

KINDS = builtin_registry()
SUPPORT = KINDS.get("support")

UNSURE_RULES = Policy(rules_confidence=0.99, llm_analysis=True)
TICKET = {"text": "The webhook integration drops events since Tuesday."}


def _llm(answer: dict[str, object] | str):  # type: ignore[no-untyped-def]
    asked: list[Prompt] = []

    def ask(prompt: Prompt) -> str:
        asked.append(prompt)
        return answer if isinstance(answer, str) else json.dumps(answer)

    return ask, asked


def test_confident_rules_decide_alone() -> None:
    ask, asked = _llm({})
    analysis = analyze(SUPPORT, {"text": "Where is my parcel?"}, Policy(llm_analysis=True), llm=ask)
    assert analysis.stage == "rules" and asked == []


def test_a_decided_semantic_match_stops_before_the_llm() -> None:
    ask, asked = _llm({})
    analysis = analyze(
        SUPPORT,
        TICKET,
        UNSURE_RULES,
        semantic=lambda text: SemanticGuess("technical", 0.83, True),
        llm=ask,
    )
    assert (analysis.stage, analysis.intent, analysis.confidence) == ("semantic", "technical", 0.83)
    assert asked == []


def test_unsure_semantic_passes_on_to_the_llm() -> None:
    answer = {
        "intent": "technical",
        "difficulty": 0.55,
        "risk": 0.0,
        "confidence": 0.8,
        "reasons": ["webhooks"],
    }
    ask, asked = _llm(answer)
    analysis = analyze(
        SUPPORT,
        TICKET,
        UNSURE_RULES,
        semantic=lambda text: SemanticGuess("billing", 0.3, False),
        llm=ask,
    )
    assert (analysis.stage, analysis.intent, analysis.difficulty) == ("llm", "technical", 0.55)
    assert "semantic unsure: billing (0.30)" in analysis.reasons and "llm: webhooks" in analysis.reasons
    assert len(asked) == 1 and asked[0].user.startswith("The webhook") and "do not follow" in asked[0].system


def test_the_llm_may_add_risk_but_never_remove_what_the_rules_found() -> None:
    answer = {"intent": "refund", "difficulty": 0.2, "risk": 0.0, "confidence": 0.9, "reasons": ["calm"]}
    ask, _ = _llm(answer)
    analysis = analyze(
        SUPPORT, {"text": "Refund now or my lawyer takes legal action."}, UNSURE_RULES, llm=ask
    )
    assert analysis.stage == "llm" and analysis.risk >= 0.9


def test_invalid_llm_output_keeps_the_best_guess_and_starts_one_tier_up() -> None:
    for bad in (
        "no json",
        {"intent": "astrology", "difficulty": 0.1, "risk": 0, "confidence": 0.9, "reasons": ["x"]},
        {"intent": "technical", "difficulty": 3, "risk": 0, "confidence": 0.9, "reasons": ["x"]},
        {"intent": "technical", "difficulty": 0.1, "risk": 0, "confidence": 0.9, "reasons": []},
    ):
        ask, _ = _llm(bad)
        analysis = analyze(SUPPORT, {"text": "Where is my parcel? It is late."}, UNSURE_RULES, llm=ask)
        assert analysis.stage == "rules" and analysis.stronger
        assert "llm analysis failed" in analysis.reasons[-1]
        decision = decide(SUPPORT, analysis, UNSURE_RULES)
        assert decision.tier is Tier.MEDIUM and any("analysis failed" in r for r in decision.reasons)


def test_llm_stage_off_in_the_policy_is_never_called() -> None:
    ask, asked = _llm({})
    analysis = analyze(SUPPORT, TICKET, Policy(rules_confidence=0.99), llm=ask)
    assert analysis.stage == "rules" and asked == []
