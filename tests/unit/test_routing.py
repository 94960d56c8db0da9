"""Rules analysis, tier choice, experts and verdicts: pure functions on plain data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tierflow.providers import rules
from tierflow.routing.analysis import analyze_rules, job_text
from tierflow.routing.decision import choose_tier, decide
from tierflow.routing.experts import ExpertOutcome, ExpertOutput, UnparseableOutput, parse_answer
from tierflow.routing.kinds.builtin import DraftReply
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.kinds.spec import KindSpec
from tierflow.routing.policy import Policy
from tierflow.routing.states import Tier
from tierflow.routing.verdict import VerdictAction, judge

KINDS = builtin_registry()
SUPPORT = KINDS.get("support")
DOCUMENT = KINDS.get("document")
PROMPT = KINDS.get("prompt")

POLICY = Policy()


@pytest.mark.parametrize(
    ("difficulty", "tier"), [(0.0, Tier.SMALL), (0.35, Tier.SMALL), (0.36, Tier.MEDIUM), (0.66, Tier.LARGE)]
)
def test_choose_tier_maps_difficulty_to_the_cheapest_tier_that_covers_it(
    difficulty: float, tier: Tier
) -> None:
    assert choose_tier(difficulty, POLICY) is tier


def test_policy_refuses_unordered_bounds() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        Policy(small_max_difficulty=0.8, medium_max_difficulty=0.5)


def test_hard_and_risky_text_scores_higher_than_plain_text() -> None:
    plain = analyze_rules(SUPPORT, {"text": "Where is my parcel?"})
    hard = analyze_rules(SUPPORT, {"text": "The API webhook integration fails after the migration."})
    risky = analyze_rules(SUPPORT, {"text": "My lawyer will take legal action."})
    assert plain.difficulty < hard.difficulty
    assert plain.risk == 0 < risky.risk
    assert plain.intent == "shipping" and plain.stage == "rules"


def test_decide_uses_the_policy_experts_and_the_tier_models() -> None:
    analysis = analyze_rules(DOCUMENT, {"text": "Total 5.00"})
    decision = decide(DOCUMENT, analysis, POLICY)
    assert decision.tier is Tier.SMALL
    assert decision.experts == ("extractor", "rule_extractor")
    assert decision.models == POLICY.tier_models[Tier.SMALL]
    forced = decide(DOCUMENT, analysis, POLICY, floor=Tier.LARGE)
    assert forced.tier is Tier.LARGE and "escalated to large" in forced.reasons


def _drafter(confidence: float) -> ExpertOutcome:
    return ExpertOutcome("drafter", True, {"reply": "ok"}, confidence)


def _check(risk: float, flags: list[str] | None = None) -> ExpertOutcome:
    return ExpertOutcome("policy_check", False, {"risk": risk, "flags": flags or []}, 1.0)


def test_confident_answer_is_accepted() -> None:
    verdict = judge(SUPPORT, [_drafter(0.9), _check(0.0)], Tier.SMALL, POLICY)
    assert verdict.action is VerdictAction.ACCEPT and verdict.quality == 0.9
    assert verdict.output == {"reply": "ok", "risk": 0.0, "flags": []}


def test_unsure_answer_escalates_and_at_the_top_goes_to_review() -> None:
    low = [_drafter(0.4), _check(0.0)]
    assert judge(SUPPORT, low, Tier.SMALL, POLICY).next_tier is Tier.MEDIUM
    assert judge(SUPPORT, low, Tier.LARGE, POLICY).action is VerdictAction.NEEDS_REVIEW


def test_policy_flags_send_a_confident_answer_to_review() -> None:
    verdict = judge(SUPPORT, [_drafter(0.95), _check(0.75, ["risk:lawyer"])], Tier.SMALL, POLICY)
    assert verdict.action is VerdictAction.NEEDS_REVIEW
    assert any("risk:lawyer" in reason for reason in verdict.reasons)


def test_failed_expert_escalates_then_fails_at_the_top() -> None:
    failed = [ExpertOutcome("drafter", True, None, None, "timeout"), _check(0.0)]
    assert judge(SUPPORT, failed, Tier.MEDIUM, POLICY).action is VerdictAction.ESCALATE
    assert judge(SUPPORT, failed, Tier.LARGE, POLICY).action is VerdictAction.FAIL


def test_document_totals_that_disagree_lower_the_quality() -> None:
    model = ExpertOutcome("extractor", True, {"fields": {"date": "2026-01-02", "total": "100.00"}}, 0.95)
    rules_agree = ExpertOutcome(
        "rule_extractor", False, {"fields": {"date": "2026-01-02", "total": "100.00"}}, 1
    )
    rules_differ = ExpertOutcome(
        "rule_extractor", False, {"fields": {"date": "2026-01-02", "total": "108.00"}}, 1
    )
    agree = judge(DOCUMENT, [model, rules_agree], Tier.SMALL, POLICY)
    differ = judge(DOCUMENT, [model, rules_differ], Tier.SMALL, POLICY)
    assert agree.action is VerdictAction.ACCEPT
    assert differ.action is VerdictAction.ESCALATE and differ.quality < agree.quality
    assert differ.output is not None and differ.output["fields"]["total"] == "100.00"


def _rule(kind: KindSpec, name: str) -> Callable[[dict[str, Any], Policy], ExpertOutput]:
    expert = kind.expert(name)
    assert expert is not None and expert.run is not None
    run = expert.run
    return lambda payload, policy: run(payload, job_text(kind, payload), policy, expert.options)


def test_policy_check_flags_legal_threats_and_large_refunds_only() -> None:
    check = _rule(SUPPORT, "policy_check")
    assert check({"text": "Please refund $1200 for the broken tent."}, POLICY).output["flags"] == [
        "refund above 200"
    ]
    assert check({"text": "Please refund $20."}, POLICY).output["flags"] == []
    assert check({"text": "Hi, Sue from accounts here."}, POLICY).output["flags"] == []
    assert "risk:lawyer" in check({"text": "My lawyer is reading this."}, POLICY).output["flags"]


def test_rule_extractor_finds_the_grand_total_not_the_subtotal() -> None:
    extract = _rule(DOCUMENT, "rule_extractor")
    text = "ACME\nDate: 2026-03-14\nSubtotal 100.00\nTax 8.00\nTotal amount due 1,108.00"
    output = extract({"text": text}, POLICY).output
    assert (output["fields"]["date"], output["fields"]["total"]) == ("2026-03-14", "1,108.00")
    assert output["rule_accept"] is False, "subtotal 100.00 + tax 8.00 is not the total 1,108.00"


def test_model_answers_are_validated_against_the_expert_schema() -> None:
    parsed = parse_answer(DraftReply, 'Sure: {"reply": "hi", "confidence": 0.8}')
    assert parsed.confidence == 0.8 and parsed.output == {"reply": "hi"}
    bad = {
        "no json here": "no JSON object",
        '{"reply": "hi"}': "confidence: Field required",
        '{"reply": "hi", "confidence": 3}': "confidence: Input should be less than or equal to 1",
        '{"reply": "", "confidence": 0.5}': "reply: String should have at least 1 character",
        '{"reply": "hi", "confidence": 0.5, "extra": 1}': "extra: Extra inputs",
        "{oops}": "Invalid JSON",
    }
    for text, problem in bad.items():
        with pytest.raises(UnparseableOutput, match=problem):
            parse_answer(DraftReply, text)


def test_fake_rules_answer_each_expert_prompt_in_a_valid_shape() -> None:
    payloads = {
        ("drafter", SUPPORT): {"text": "I cannot log in"},
        ("extractor", DOCUMENT): {"text": "ACME\nDate: 2026-01-02\nTotal 9.99"},
        ("answerer", PROMPT): {"prompt": "What is 1234 * 5678?"},
    }
    for (name, kind), payload in payloads.items():
        expert = kind.expert(name)
        assert expert is not None and expert.build is not None
        prompt = expert.build(payload, {})
        strong = prompt.parse(rules.answer(prompt.system, prompt.user, 0.97))
        weak = prompt.parse(rules.answer(prompt.system, prompt.user, 0.55))
        assert strong.confidence >= weak.confidence
    answer = PROMPT.expert("answerer")
    assert answer is not None and answer.build is not None
    prompt = answer.build({"prompt": "What is 1234 * 5678?"}, {})
    assert prompt.parse(rules.answer(prompt.system, prompt.user, 0.9)).output["answer"] == "7006652"
