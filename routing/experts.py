"""The experts a job fans out to: what each asks a model, or computes by rules.

Pure. A model expert turns a job into a Prompt and the model's text back into an
ExpertOutput; a rule expert computes its ExpertOutput directly. The tasks layer
makes the calls and stores what comes back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from routing.analysis import RISK_MARKERS, job_text
from routing.jobs import JobKind
from routing.policy import Policy


@dataclass(frozen=True)
class Prompt:
    task: str
    system: str
    user: str
    max_tokens: int = 400


@dataclass(frozen=True)
class ExpertOutput:
    output: dict[str, Any]
    confidence: float


@dataclass(frozen=True)
class ExpertOutcome:
    """What the judge sees of one expert: its output, or the error it ended with."""

    name: str
    uses_model: bool
    output: dict[str, Any] | None
    confidence: float | None
    error: str | None = None


class UnparseableOutput(ValueError):
    """The model's text is not the JSON object the expert asked for."""


@dataclass(frozen=True)
class Expert:
    name: str
    kind: JobKind
    prompt: Callable[[dict[str, Any]], Prompt] | None = None
    parse: Callable[[str], ExpertOutput] | None = None
    rule: Callable[[dict[str, Any], Policy], ExpertOutput] | None = None
    required_keys: tuple[str, ...] = field(default_factory=tuple)

    @property
    def uses_model(self) -> bool:
        return self.prompt is not None


def _system(task: str, instruction: str, keys: str) -> str:
    return (
        f"Task: {task}\n{instruction}\n"
        f"Answer with one JSON object with the keys {keys}; "
        "confidence is your probability, between 0 and 1, that the answer is right."
    )


def _json_object(text: str, keys: tuple[str, ...]) -> dict[str, Any]:
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        raise UnparseableOutput("no JSON object in the model's answer")
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise UnparseableOutput(f"invalid JSON: {exc.msg}") from exc
    missing = [key for key in keys if key not in value]
    if missing:
        raise UnparseableOutput(f"missing keys: {', '.join(missing)}")
    confidence = value.get("confidence")
    if not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
        raise UnparseableOutput("confidence is not a number in [0, 1]")
    return dict(value)


def _parser(keys: tuple[str, ...]) -> Callable[[str], ExpertOutput]:
    def parse(text: str) -> ExpertOutput:
        value = _json_object(text, keys + ("confidence",))
        confidence = float(value.pop("confidence"))
        return ExpertOutput(output=value, confidence=confidence)

    return parse


def _draft_prompt(payload: dict[str, Any]) -> Prompt:
    return Prompt(
        task="draft_reply",
        system=_system(
            "draft_reply",
            "Draft a reply to this customer support ticket: polite, specific, actionable.",
            '"reply", "confidence"',
        ),
        user=job_text(JobKind.SUPPORT, payload),
    )


def _extract_prompt(payload: dict[str, Any]) -> Prompt:
    return Prompt(
        task="extract_fields",
        system=_system(
            "extract_fields",
            "Extract the fields company, date, total and document_number from this document; "
            "use null for a field that is not present.",
            '"fields", "confidence"',
        ),
        user=str(payload["text"]),
    )


def _answer_prompt(payload: dict[str, Any]) -> Prompt:
    return Prompt(
        task="answer",
        system=_system("answer", "Answer the question concisely.", '"answer", "confidence"'),
        user=str(payload["prompt"]),
    )


AMOUNT = re.compile(
    r"(?:\$|€|£|\b(?:USD|EUR|GBP|RM)\s?)(\d{1,3}(?:,\d{3})+(?:\.\d{2})?|\d+(?:\.\d{2})?)(?![\d,])", re.I
)
DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4})\b")
TOTAL = re.compile(
    r"\b(?<!sub )(?:grand\s+)?total(?:\s+(?:amount|due|payable)){0,2}\s*[:=]?\s*"
    r"(?:\$|USD|EUR|€|£|RM)?\s?"
    r"(\d{1,3}(?:,\d{3})*\.\d{2}|\d+\.\d{2})",
    re.I,
)
REFUND = re.compile(r"\b(refund|money back|reimburse\w*|chargeback)\b", re.I)


def _policy_check(payload: dict[str, Any], policy: Policy) -> ExpertOutput:
    text = job_text(JobKind.SUPPORT, payload)
    flags = sorted({f"risk:{match.lower()}" for match in RISK_MARKERS.findall(text)})
    amounts = [float(value.replace(",", "")) for value in AMOUNT.findall(text)]
    if REFUND.search(text) and amounts and max(amounts) > policy.refund_limit_usd:
        flags.append(f"refund above {policy.refund_limit_usd:.0f}")
    risk = min(1.0, 0.75 * len(flags))
    return ExpertOutput(output={"flags": flags, "risk": risk}, confidence=1.0)


def _rule_extract(payload: dict[str, Any], policy: Policy) -> ExpertOutput:
    text = str(payload["text"])
    date = DATE.search(text)
    total = TOTAL.search(text)
    fields = {
        "date": date.group(1) if date else None,
        "total": total.group(1).replace(",", "") if total else None,
    }
    found = sum(value is not None for value in fields.values())
    return ExpertOutput(output={"fields": fields}, confidence=found / len(fields))


EXPERTS: dict[tuple[JobKind, str], Expert] = {
    (expert.kind, expert.name): expert
    for expert in (
        Expert("drafter", JobKind.SUPPORT, _draft_prompt, _parser(("reply",))),
        Expert("policy_check", JobKind.SUPPORT, rule=_policy_check),
        Expert("extractor", JobKind.DOCUMENT, _extract_prompt, _parser(("fields",))),
        Expert("rule_extractor", JobKind.DOCUMENT, rule=_rule_extract),
        Expert("answerer", JobKind.PROMPT, _answer_prompt, _parser(("answer",))),
    )
}


def expert_for(kind: JobKind, name: str) -> Expert:
    try:
        return EXPERTS[(kind, name)]
    except KeyError:
        raise KeyError(f"no expert {name!r} for {kind.value} jobs") from None
