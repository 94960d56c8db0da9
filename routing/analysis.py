"""Stage one of job analysis: declarative rules over the job's text and metadata.

Pure. Later stages (embeddings, an LLM) plug in behind the same Analysis type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tierflow.routing.kinds.template import render
from tierflow.routing.policy import Policy
from tierflow.routing.rules import RoutingRule, approximate_tokens, first_match

if TYPE_CHECKING:  # the kind seam imports this module's signals; at run time a kind is passed in
    from tierflow.routing.kinds.spec import KindSpec

HARD_MARKERS = re.compile(
    r"\b(intermittent|integration|api|webhook|regulation|gdpr|chargeback|dispute|reconcile|"
    r"multiple|several|migrat\w*|invoice mismatch|discrepanc\w*|audit|exception|stack trace|"
    r"prove|derive|step by step|compare)\b",
    re.IGNORECASE,
)
RISK_MARKERS = re.compile(
    r"\b(lawyer|attorney|lawsuit|sue (?:you|your|the|northwind)|legal action|"
    r"small claims court|"
    r"take you to court|ombudsman|regulator|fraud|close my account|delete my account|cancel my account|"
    r"data breach)\b",
    re.IGNORECASE,
)
INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("refund", re.compile(r"\b(refund|money back|reimburse\w*)\b", re.I)),
    ("billing", re.compile(r"\b(invoices?|charged?|billed|billing|payments?|subscriptions?)\b", re.I)),
    ("account", re.compile(r"\b(password|login|log in|account|2fa|locked)\b", re.I)),
    ("shipping", re.compile(r"\b(deliver\w*|shipping|package|parcel|tracking)\b", re.I)),
    ("returns", re.compile(r"\b(return(?:s|ing)?|exchange|wrong size)\b", re.I)),
    ("technical", re.compile(r"\b(error|crash\w*|bug|api|integration|sync\w*)\b", re.I)),
)


@dataclass(frozen=True)
class Analysis:
    intent: str
    domain: str
    difficulty: float
    risk: float
    needs_retrieval: bool
    confidence: float
    stage: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    stronger: bool = False  # the analysis failed: start the job on a stronger tier
    rules_answered: bool = False  # the rules alone produced a validated answer: no model needed
    # The semantic stage found no route near enough (the best below its fitted threshold) and
    # no later stage named an intent: the kind's general specialist takes it.
    out_of_scope: bool = False
    # The job's split into several asks (routing/decompose.Split.as_dict); None: not looked at.
    split: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Analysis:
        known = {name: value for name, value in data.items() if name in cls.__dataclass_fields__}
        return cls(**{**known, "reasons": tuple(data.get("reasons", ()))})

    def as_dict(self) -> dict[str, object]:
        return {
            "intent": self.intent,
            "domain": self.domain,
            "difficulty": self.difficulty,
            "risk": self.risk,
            "needs_retrieval": self.needs_retrieval,
            "confidence": self.confidence,
            "stage": self.stage,
            "reasons": list(self.reasons),
            "stronger": self.stronger,
            "rules_answered": self.rules_answered,
            "out_of_scope": self.out_of_scope,
        } | ({} if self.split is None else {"split": self.split})


def job_text(kind: KindSpec, payload: Mapping[str, object]) -> str:
    """The text a job is about: its kind's text template over the payload."""
    return render(kind.text, payload)


# What an answering rule expert is run with at analysis time: it reads no policy field.
NEUTRAL_POLICY = Policy()

CODE_BLOCK = re.compile(r"```|^(?: {4}|\t)\S", re.MULTILINE)
ARITHMETIC = re.compile(r"\d+(?:\.\d+)?\s*[-+*/×x^]\s*\d+")
LONG_WORDS = 400


def _signals(text: str) -> tuple[float, list[str]]:
    """Content signals beyond words: code, arithmetic, a long document."""
    extra, reasons = 0.0, []
    if CODE_BLOCK.search(text):
        extra += 0.15
        reasons.append("code block")
    if ARITHMETIC.search(text):
        extra += 0.05
        reasons.append("arithmetic")
    if len(text.split()) > LONG_WORDS:
        reasons.append("long document")
    return extra, reasons


def analyze_rules(
    kind: KindSpec,
    payload: dict[str, object],
    rules: Sequence[RoutingRule] = (),
    metadata: Mapping[str, object] | None = None,
    tokens: int | None = None,
) -> Analysis:
    """The policy's declarative rules, then difficulty, risk and intent from cheap textual signals."""
    text = job_text(kind, payload)
    built_in = _built_in(kind, payload, text)
    every = (*rules, *kind.routing.rules)  # the policy's rules first, then the kind's own
    rule = first_match(every, kind.name, text, tokens or approximate_tokens(text), metadata or {})
    if rule is None:
        return built_in
    return replace(
        built_in,
        intent=rule.intent or built_in.intent,
        difficulty=built_in.difficulty if rule.difficulty is None else rule.difficulty,
        risk=max(built_in.risk, rule.risk or 0.0),  # a rule may add risk, not hide what was seen
        confidence=rule.confidence,
        reasons=(*built_in.reasons, f"rule {rule.name} matched"),
    )


def _rules_answered(kind: KindSpec, payload: dict[str, object], text: str) -> bool:
    """Whether the kind's answering rule expert accepts its own answer: no model is needed."""
    expert = kind.expert(kind.routing.answered_by) if kind.routing.answered_by else None
    if expert is None or expert.run is None:
        return False
    return bool(expert.run(dict(payload), text, NEUTRAL_POLICY, expert.options).output.get("rule_accept"))


def _built_in(kind: KindSpec, payload: dict[str, object], text: str) -> Analysis:
    words = len(text.split())
    hard = sorted({match.lower() for match in HARD_MARKERS.findall(text)})
    risky = sorted({match.lower() for match in RISK_MARKERS.findall(text)})
    extra, signals = _signals(text)
    difficulty = min(1.0, 0.1 + min(words, 400) / 800 + 0.15 * len(hard) + 0.05 * text.count("?") + extra)
    risk = min(1.0, 0.45 * len(risky))
    intent = next((name for name, pattern in INTENTS if pattern.search(text)), "general")
    reasons = [f"{words} words", *signals]
    if hard:
        reasons.append("hard markers: " + ", ".join(hard))
    if risky:
        reasons.append("risk markers: " + ", ".join(risky))
    answered = _rules_answered(kind, payload, text)
    if answered:
        reasons.append("rules found every field with consistent evidence")
    return Analysis(
        rules_answered=answered,
        intent=intent if kind.routing.intents else kind.name,
        domain=kind.name,
        difficulty=round(difficulty, 3),
        risk=round(risk, 3),
        needs_retrieval=kind.retrieves(),
        confidence=0.6 if hard or risky else 0.8,
        stage="rules",
        reasons=tuple(reasons),
    )
