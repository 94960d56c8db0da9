"""The aggregate's judgement over one attempt's expert outcomes.

Pure. accept, escalate to the next tier, hold for review, or fail when no tier
is left and nothing usable came back. What is checked comes from the job's kind
(routing/kinds/): its acceptance checks, its review rules, which experts answer
and which only check; experts are told apart by their type, never by their name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.kinds.checks import CheckInput, Problem
from tierflow.routing.kinds.spec import CheckSpec, ExpertType, KindSpec, OnFail, ReviewRule
from tierflow.routing.policy import Policy
from tierflow.routing.states import Tier, next_tier


class VerdictAction(str, Enum):
    ACCEPT = "accept"
    ESCALATE = "escalate"
    NEEDS_REVIEW = "needs_review"
    NEEDS_CLARIFICATION = "needs_clarification"  # a strategy search's clarify step (routing/search.py)
    FAIL = "fail"


@dataclass(frozen=True)
class Verdict:
    action: VerdictAction
    quality: float
    output: dict[str, Any] | None
    reasons: tuple[str, ...]
    next_tier: Tier | None = None
    # Judged on its quality or checks (not on failed experts or a review rule): a strategy
    # search moves on to its next strategy, whether or not a tier is left above.
    uncertain: bool = False


def _answers(kind: KindSpec, name: str) -> bool:
    expert = kind.expert(name)
    return expert is None or expert.answers  # a verifier checks, it does not answer


def _output(kind: KindSpec, outcomes: dict[str, ExpertOutcome]) -> dict[str, Any] | None:
    merged: dict[str, Any] = {}
    for outcome in outcomes.values():
        if outcome.output is not None and _answers(kind, outcome.name):
            merged.update(outcome.output)
    for field in kind.merge:
        merged[field] = _merged_field(kind, outcomes, field)
    return merged or None


def _merged_field(kind: KindSpec, outcomes: dict[str, ExpertOutcome], field: str) -> dict[str, Any]:
    """A dict field across the experts: where several give a key, the first declared expert wins."""
    values: dict[str, Any] = {}
    for expert in reversed(kind.experts):
        outcome = outcomes.get(expert.name)
        if outcome and outcome.output:
            values.update({k: v for k, v in outcome.output.get(field, {}).items() if v is not None})
    return values


def _judge_failure(
    kind: KindSpec, by_name: dict[str, ExpertOutcome], failed: list[str], tier: Tier, above: Tier | None
) -> Verdict:
    """Experts that errored: try the tier above, or fail with what did come back."""
    reasons = (f"experts failed at {tier.value}: {', '.join(sorted(failed))}",)
    if above is not None:
        return Verdict(VerdictAction.ESCALATE, 0.0, None, reasons, above)
    return Verdict(VerdictAction.FAIL, 0.0, _output(kind, by_name), reasons)


def _above(kind: KindSpec, tier: Tier, policy: Policy) -> Tier | None:
    """The next tier on the ladder, unless the job's class may not go there."""
    above = next_tier(tier, policy.ladder)
    cap = policy.cap(kind.name, kind.routing.max_tier)
    if above is None or policy.ladder.index(above) > policy.ladder.index(cap):
        return None
    return above


def answer_text(kind: KindSpec, outcomes: list[ExpertOutcome]) -> str | None:
    """The attempt's answer as text, for the learned cascade scorer; None when nothing answered."""
    output = _output(kind, {outcome.name: outcome for outcome in outcomes})
    if output is None:
        return None
    if kind.answer_field and isinstance(output.get(kind.answer_field), str):
        return str(output[kind.answer_field])
    return json.dumps(output, sort_keys=True, default=str)


def _learned_escalation(kind: KindSpec, policy: Policy, cascade_gain: float | None) -> str | None:
    learned = policy.learned.get(kind.name)
    if learned is None or cascade_gain is None or cascade_gain < learned.escalate_gain:
        return None
    return (
        f"learned cascade: the top tier is likelier good by {cascade_gain:.2f} >= {learned.escalate_gain:.2f}"
    )


@dataclass
class _Checked:
    quality: float
    reasons: list[str]
    escalate: bool = False
    review: bool = False


def _apply_check(check: CheckSpec, problems: list[Problem], state: _Checked) -> None:
    if not problems:
        return
    state.reasons.extend(problem.reason for problem in problems)
    if check.on_fail is OnFail.PENALTY:
        penalty = sum(check.penalty if p.penalty is None else p.penalty for p in problems)
        state.quality = max(0.0, state.quality - penalty)
    elif check.on_fail is OnFail.SCALE:
        state.quality *= check.factor
    elif check.on_fail is OnFail.REVIEW:
        state.review = True
    else:
        state.escalate = True


def _run_checks(kind: KindSpec, by_name: dict[str, ExpertOutcome], state: _Checked) -> None:
    answer = _output(kind, by_name) or {}
    for check in kind.checks:
        if check.run is not None:
            seen = CheckInput(kind, by_name, answer, state.quality)
            _apply_check(check, check.run(check, seen), state)
    for expert in kind.experts:
        outcome = by_name.get(expert.name)
        found = outcome.output if outcome is not None else None
        if expert.type is ExpertType.RETRIEVER and found is not None and not found.get("articles"):
            state.reasons.append(str(expert.options.get("empty_reason", "no knowledge article matched")))


def _review_reason(
    rule: ReviewRule, kind: KindSpec, by_name: dict[str, ExpertOutcome], text: str, policy: Policy
) -> str | None:
    """Why the review rule holds the attempt for a person, or None."""
    if rule.type == "words":
        hits = [w for w in rule.words if re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE)]
        return f"{rule.label or 'review words'}: {', '.join(hits)}" if hits else None
    if rule.expert is None:
        source = _output(kind, by_name)
    else:
        named = by_name.get(rule.expert)
        source = named.output if named is not None else None
    if source is None or rule.field is None:
        return None
    value = source.get(rule.field)
    details = list(source.get(rule.reasons_field, [])) if rule.reasons_field else []
    if rule.type == "output_value" and value is not None and str(value) in rule.values:
        return f"{rule.label or rule.field}: {', '.join(details) or value}"
    if rule.type == "output_at_least" and isinstance(value, int | float):
        threshold = policy.review_risk if rule.at_least is None else rule.at_least
        if value >= threshold:
            return f"{rule.label or rule.field}: {', '.join(details) or value}"
    return None


def judge(
    kind: KindSpec,
    outcomes: list[ExpertOutcome],
    tier: Tier,
    policy: Policy,
    cascade_gain: float | None = None,
    text: str = "",
) -> Verdict:
    """Decide what happens to an attempt from its experts' outcomes.

    Args:
        cascade_gain: from the policy's learned cascade scorer (routing.learning.cascade_gain), how
            much likelier the top tier's answer is good than this one; it can only escalate.
        text: the job's text, for the kind's review words.
    """
    by_name = {outcome.name: outcome for outcome in outcomes}
    above = _above(kind, tier, policy)
    failed = [o.name for o in outcomes if o.error is not None]
    if failed:
        return _judge_failure(kind, by_name, failed, tier, above)
    confidences = [o.confidence for o in outcomes if o.uses_model and o.confidence is not None]
    if not confidences:  # rules alone answered: their own confidence is the quality
        confidences = [o.confidence for o in outcomes if o.confidence is not None]
    quality = min(confidences) if confidences else 1.0
    state = _Checked(quality, [f"model confidence {quality:.2f} at {tier.value}"])
    _run_checks(kind, by_name, state)
    quality, reasons, output = state.quality, state.reasons, _output(kind, by_name)
    held = [r for rule in kind.review if (r := _review_reason(rule, kind, by_name, text, policy))]
    if held or state.review:
        reasons.extend(held)
        return Verdict(VerdictAction.NEEDS_REVIEW, round(quality, 3), output, tuple(reasons))
    learned = _learned_escalation(kind, policy, cascade_gain)
    if learned is not None and above is not None:
        return Verdict(VerdictAction.ESCALATE, round(quality, 3), output, (*reasons, learned), above, True)
    threshold = policy.threshold(tier)
    if quality >= threshold and not state.escalate:
        return Verdict(VerdictAction.ACCEPT, round(quality, 3), output, tuple(reasons))
    reasons.append(f"quality below {threshold:.2f}" if quality < threshold else "a check failed")
    if above is not None:
        return Verdict(VerdictAction.ESCALATE, round(quality, 3), output, tuple(reasons), above, True)
    reasons.append(f"no tier above {tier.value} for {kind.name} jobs")
    return Verdict(VerdictAction.NEEDS_REVIEW, round(quality, 3), output, tuple(reasons), None, True)
