"""The aggregate's judgement over one attempt's expert outcomes.

Pure. accept, escalate to the next tier, hold for review, or fail when no tier
is left and nothing usable came back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tierflow.routing.documents import fields_agree, validate_fields
from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.jobs import JobKind
from tierflow.routing.policy import Policy
from tierflow.routing.states import Tier, next_tier


class VerdictAction(str, Enum):
    ACCEPT = "accept"
    ESCALATE = "escalate"
    NEEDS_REVIEW = "needs_review"
    FAIL = "fail"


@dataclass(frozen=True)
class Verdict:
    action: VerdictAction
    quality: float
    output: dict[str, Any] | None
    reasons: tuple[str, ...]
    next_tier: Tier | None = None


def _output(kind: JobKind, outcomes: dict[str, ExpertOutcome]) -> dict[str, Any] | None:
    merged: dict[str, Any] = {}
    for outcome in outcomes.values():
        if outcome.output is not None and outcome.name != "verifier":  # a verifier checks, it does not answer
            merged.update(outcome.output)
    if kind is JobKind.DOCUMENT:
        merged["fields"] = _merged_fields(outcomes)
    return merged or None


def _merged_fields(outcomes: dict[str, ExpertOutcome]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("rule_extractor", "extractor"):  # the model's fields win where present
        outcome = outcomes.get(name)
        if outcome and outcome.output:
            fields.update({k: v for k, v in outcome.output.get("fields", {}).items() if v is not None})
    return fields


# A disagreement on what the document is worth or when it was issued weighs more than on names.
DISAGREEMENT_PENALTY = {"total": 0.3, "date": 0.3}
ISSUE_PENALTY = 0.2


def _fields(outcomes: dict[str, ExpertOutcome], name: str) -> dict[str, Any] | None:
    outcome = outcomes.get(name)
    if outcome is None or outcome.output is None:
        return None
    return dict(outcome.output.get("fields", {}))


def _document_penalty(outcomes: dict[str, ExpertOutcome]) -> tuple[float, list[str]]:
    """Validators on the fields the verdict will give, and where the model and the rules disagree."""
    model, rules = _fields(outcomes, "extractor"), _fields(outcomes, "rule_extractor")
    given = model if model is not None else rules or {}
    penalty, reasons = 0.0, []
    for issue in validate_fields(given):
        penalty += ISSUE_PENALTY
        reasons.append(issue.message)
    if model is not None and rules is not None:
        for disagreement in fields_agree(model, rules):
            penalty += DISAGREEMENT_PENALTY.get(disagreement.field, 0.1)
            reasons.append(
                f"{disagreement.field} disagrees: model {disagreement.model}, rules {disagreement.rules}"
            )
    return penalty, reasons


def _normal_answer(value: object) -> str:
    return " ".join(str(value).lower().strip().rstrip(".!").split())


def _conflict(outcomes: dict[str, ExpertOutcome]) -> list[str]:
    """Experts that answer the same question differently."""
    answer, verifier = outcomes.get("answerer"), outcomes.get("verifier")
    if not (answer and verifier and answer.output and verifier.output):
        return []
    if _normal_answer(answer.output.get("answer")) == _normal_answer(verifier.output.get("answer")):
        return []
    first, second = answer.output.get("answer"), verifier.output.get("answer")
    return [f"answerer and verifier disagree: {first!r} vs {second!r}"]


def _risk(outcomes: dict[str, ExpertOutcome]) -> tuple[float, list[str]]:
    check = outcomes.get("policy_check")
    if check is None or check.output is None:
        return 0.0, []
    return float(check.output.get("risk", 0.0)), list(check.output.get("flags", []))


def _judge_failure(
    kind: JobKind, by_name: dict[str, ExpertOutcome], failed: list[str], tier: Tier, above: Tier | None
) -> Verdict:
    """Experts that errored: try the tier above, or fail with what did come back."""
    reasons = (f"experts failed at {tier.value}: {', '.join(sorted(failed))}",)
    if above is not None:
        return Verdict(VerdictAction.ESCALATE, 0.0, None, reasons, above)
    return Verdict(VerdictAction.FAIL, 0.0, _output(kind, by_name), reasons)


def _above(kind: JobKind, tier: Tier, policy: Policy) -> Tier | None:
    """The next tier on the ladder, unless the job's class may not go there."""
    above = next_tier(tier, policy.ladder)
    cap = policy.cap(kind)
    if above is None or policy.ladder.index(above) > policy.ladder.index(cap):
        return None
    return above


def answer_text(kind: JobKind, outcomes: list[ExpertOutcome]) -> str | None:
    """The attempt's answer as text, for the learned cascade scorer; None when nothing answered."""
    output = _output(kind, {outcome.name: outcome for outcome in outcomes})
    if output is None:
        return None
    for key in ("answer", "reply"):
        if isinstance(output.get(key), str):
            return str(output[key])
    return json.dumps(output, sort_keys=True, default=str)


def _learned_escalation(kind: JobKind, policy: Policy, cascade_gain: float | None) -> str | None:
    learned = policy.learned.get(kind)
    if learned is None or cascade_gain is None or cascade_gain < learned.escalate_gain:
        return None
    return (
        f"learned cascade: the top tier is likelier good by {cascade_gain:.2f} >= {learned.escalate_gain:.2f}"
    )


def judge(
    kind: JobKind,
    outcomes: list[ExpertOutcome],
    tier: Tier,
    policy: Policy,
    cascade_gain: float | None = None,
) -> Verdict:
    """Decide what happens to an attempt from its experts' outcomes.

    Args:
        cascade_gain: from the policy's learned cascade scorer (routing.learning.cascade_gain), how
            much likelier the top tier's answer is good than this one; it can only escalate.
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
    reasons: list[str] = [f"model confidence {quality:.2f} at {tier.value}"]
    if kind is JobKind.DOCUMENT:
        penalty, why = _document_penalty(by_name)
        quality = max(0.0, quality - penalty)
        reasons.extend(why)
    conflicts = _conflict(by_name)
    if conflicts:
        quality *= 0.5
        reasons.extend(conflicts)
    retriever = by_name.get("retriever")
    if retriever is not None and retriever.output is not None and not retriever.output.get("articles"):
        reasons.append("no policy article matched the ticket")
    output = _output(kind, by_name)
    risk, flags = _risk(by_name)
    if risk >= policy.review_risk:
        reasons.append("policy flags: " + ", ".join(flags))
        return Verdict(VerdictAction.NEEDS_REVIEW, round(quality, 3), output, tuple(reasons))
    learned = _learned_escalation(kind, policy, cascade_gain)
    if learned is not None and above is not None:
        return Verdict(VerdictAction.ESCALATE, round(quality, 3), output, (*reasons, learned), above)
    threshold = policy.threshold(tier)
    if quality >= threshold:
        return Verdict(VerdictAction.ACCEPT, round(quality, 3), output, tuple(reasons))
    reasons.append(f"quality below {threshold:.2f}")
    if above is not None:
        return Verdict(VerdictAction.ESCALATE, round(quality, 3), output, tuple(reasons), above)
    reasons.append(f"no tier above {tier.value} for {kind.value} jobs")
    return Verdict(VerdictAction.NEEDS_REVIEW, round(quality, 3), output, tuple(reasons))
