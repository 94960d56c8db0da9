"""The experts a job fans out to: what each asks a model, or computes by rules.

Pure. A model expert turns a job into a Prompt and the model's text back into an
ExpertOutput; a rule expert computes its ExpertOutput directly. The tasks layer
makes the calls and stores what comes back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierflow.routing.analysis import RISK_MARKERS, job_text
from tierflow.routing.documents import decide_document, extract_fields
from tierflow.routing.jobs import JobKind
from tierflow.routing.policy import Policy


class ExpertAnswer(BaseModel):
    """What every model expert answers: its output fields and its confidence."""

    model_config = ConfigDict(extra="forbid")

    confidence: float = Field(ge=0, le=1)


class DraftReply(ExpertAnswer):
    reply: str = Field(min_length=1)


class DocumentFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    company: str | None
    date: str | None
    total: str | None
    document_number: str | None


class ExtractedFields(ExpertAnswer):
    fields: DocumentFields


class Answer(ExpertAnswer):
    answer: str = Field(min_length=1)


@dataclass(frozen=True)
class Prompt:
    task: str
    system: str
    user: str
    schema: type[ExpertAnswer]
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
    """The model's text is not the JSON object its schema asks for."""


@dataclass(frozen=True)
class Expert:
    """A model expert has a prompt; a rule expert a rule; a retriever searches the knowledge base.

    A prompt builder takes the payload and a context: for a grounded expert, the
    context's "articles" are the knowledge base's best matches for the job.
    """

    name: str
    kind: JobKind
    prompt: Callable[[dict[str, Any], Mapping[str, Any]], Prompt] | None = None
    rule: Callable[[dict[str, Any], Policy], ExpertOutput] | None = None
    grounded: bool = False
    retrieves: bool = False

    @property
    def uses_model(self) -> bool:
        return self.prompt is not None


def parse_answer(schema: type[ExpertAnswer], text: str) -> ExpertOutput:
    """Validate a model's text against the expert's schema; UnparseableOutput says what is wrong."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        raise UnparseableOutput("no JSON object in the answer")
    try:
        answer = schema.model_validate_json(match.group(0))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '<object>'}: {error['msg']}"
            for error in exc.errors()
        )
        raise UnparseableOutput(problems) from None
    output = answer.model_dump(mode="json", exclude={"confidence"})
    return ExpertOutput(output=output, confidence=answer.confidence)


def _system(task: str, instruction: str, schema: type[ExpertAnswer]) -> str:
    keys = ", ".join(f'"{name}"' for name in schema.model_fields)
    return (
        f"Task: {task}\n{instruction}\n"
        f"Answer with one JSON object with the keys {keys}; "
        "confidence is your probability, between 0 and 1, that the answer is right."
    )


def _draft_prompt(payload: dict[str, Any], context: Mapping[str, Any]) -> Prompt:
    instruction = "Draft a reply to this customer support ticket: polite, specific, actionable."
    articles = context.get("articles") or []
    if articles:
        policies = "\n".join(f"- {a['title']}: {a['snippet']}" for a in articles)
        instruction += f"\nFollow these policy articles; do not promise what they do not allow:\n{policies}"
    return Prompt(
        task="draft_reply",
        system=_system("draft_reply", instruction, DraftReply),
        user=job_text(JobKind.SUPPORT, payload),
        schema=DraftReply,
    )


def _extract_prompt(payload: dict[str, Any], context: Mapping[str, Any]) -> Prompt:
    instruction = (
        "Extract the fields company, date, total and document_number from this document; "
        "use null for a field that is not present."
    )
    return Prompt(
        task="extract_fields",
        system=_system("extract_fields", instruction, ExtractedFields),
        user=str(payload["text"]),
        schema=ExtractedFields,
    )


def _answer_prompt(payload: dict[str, Any], context: Mapping[str, Any]) -> Prompt:
    return Prompt(
        task="answer",
        system=_system("answer", "Answer the question concisely.", Answer),
        user=str(payload["prompt"]),
        schema=Answer,
    )


def _verify_prompt(payload: dict[str, Any], context: Mapping[str, Any]) -> Prompt:
    instruction = "Work the question out independently, check your work, and give only the final answer."
    return Prompt(
        task="verify",
        system=_system("verify", instruction, Answer),
        user=str(payload["prompt"]),
        schema=Answer,
    )


AMOUNT = re.compile(
    r"(?:\$|€|£|\b(?:USD|EUR|GBP|RM)\s?)(\d{1,3}(?:,\d{3})+(?:\.\d{2})?|\d+(?:\.\d{2})?)(?![\d,])", re.I
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
    """Fields by rules, with the validators' verdict on them (routing/documents.py)."""
    document = extract_fields(str(payload["text"]))
    decision = decide_document(document)
    output = {
        "fields": document.fields(),
        "rule_accept": decision.accept,
        "issues": [issue.message for issue in decision.issues],
    }
    return ExpertOutput(output=output, confidence=decision.confidence)


EXPERTS: dict[tuple[JobKind, str], Expert] = {
    (expert.kind, expert.name): expert
    for expert in (
        Expert("drafter", JobKind.SUPPORT, _draft_prompt, grounded=True),
        Expert("retriever", JobKind.SUPPORT, retrieves=True),
        Expert("policy_check", JobKind.SUPPORT, rule=_policy_check),
        Expert("extractor", JobKind.DOCUMENT, _extract_prompt),
        Expert("rule_extractor", JobKind.DOCUMENT, rule=_rule_extract),
        Expert("answerer", JobKind.PROMPT, _answer_prompt),
        Expert("verifier", JobKind.PROMPT, _verify_prompt),
    )
}


def expert_for(kind: JobKind, name: str) -> Expert:
    try:
        return EXPERTS[(kind, name)]
    except KeyError:
        raise KeyError(f"no expert {name!r} for {kind.value} jobs") from None
