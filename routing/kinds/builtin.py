"""The three kinds tierflow ships (support tickets, documents, prompts), as plug-ins of the seam.

They are declared exactly as a user's kind is, with the Python a kinds file cannot
say: payload models with their own error messages, prompt builders, two rule
experts and the receipts' field check. Pure: pydantic and routing/ only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from tierflow.routing.analysis import RISK_MARKERS
from tierflow.routing.documents import decide_document, extract_fields, fields_agree, validate_fields
from tierflow.routing.experts import ExpertAnswer, ExpertOutput, Prompt, system_prompt
from tierflow.routing.kinds import builtin_offline
from tierflow.routing.kinds.checks import Check, CheckInput, Problem
from tierflow.routing.kinds.spec import (
    CheckSpec,
    DecomposeSpec,
    ExpertSpec,
    ExpertType,
    ExpertWhen,
    KindRouting,
    KindSpec,
    OfflineAnswer,
    OnFail,
    PayloadValidator,
    ReviewRule,
    Rule,
    SpecialistSpec,
)
from tierflow.routing.kinds.template import render
from tierflow.routing.policy import Policy

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SupportPayload(_Strict):
    text: Text
    subject: str | None = None
    customer: str | None = None


class DocumentPayload(_Strict):
    text: Text
    doc_type: str | None = None


class PromptPayload(_Strict):
    prompt: Text


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


def _validator(model: type[BaseModel]) -> PayloadValidator:
    def validate(payload: dict[str, Any]) -> list[tuple[str, str]]:
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            return [(".".join(str(p) for p in e["loc"]) or "<payload>", e["msg"]) for e in exc.errors()]
        return []

    return validate


def _system(task: str, instruction: str, schema: type[ExpertAnswer]) -> str:
    return system_prompt(task, instruction, list(schema.model_fields))


SUPPORT_TEXT = "{subject}\n{text}"


def _draft_prompt(payload: dict[str, Any], context: Mapping[str, Any]) -> Prompt:
    instruction = "Draft a reply to this customer support ticket: polite, specific, actionable."
    if context.get("instruction"):
        instruction += f"\n{context['instruction']}"
    articles = context.get("articles") or []
    if articles:
        policies = "\n".join(f"- {a['title']}: {a['snippet']}" for a in articles)
        instruction += f"\nFollow these policy articles; do not promise what they do not allow:\n{policies}"
    return Prompt(
        task="draft_reply",
        system=_system("draft_reply", instruction, DraftReply),
        user=render(SUPPORT_TEXT, payload),
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


def support_policy(
    payload: dict[str, Any], text: str, policy: Policy, options: Mapping[str, Any]
) -> ExpertOutput:
    """Risk words, and a refund asked above the policy's limit."""
    flags = sorted({f"risk:{match.lower()}" for match in RISK_MARKERS.findall(text)})
    amounts = [float(value.replace(",", "")) for value in AMOUNT.findall(text)]
    if REFUND.search(text) and amounts and max(amounts) > policy.refund_limit_usd:
        flags.append(f"refund above {policy.refund_limit_usd:.0f}")
    risk = min(1.0, 0.75 * len(flags))
    return ExpertOutput(output={"flags": flags, "risk": risk}, confidence=1.0)


def receipt_fields(
    payload: dict[str, Any], text: str, policy: Policy, options: Mapping[str, Any]
) -> ExpertOutput:
    """Fields by rules, with the validators' verdict on them (routing/documents.py)."""
    document = extract_fields(str(payload["text"]))
    decision = decide_document(document)
    output = {
        "fields": document.fields(),
        "rule_accept": decision.accept,
        "issues": [issue.message for issue in decision.issues],
    }
    return ExpertOutput(output=output, confidence=decision.confidence)


# A disagreement on what the document is worth or when it was issued weighs more than on names.
DISAGREEMENT_PENALTY = {"total": 0.3, "date": 0.3}
ISSUE_PENALTY = 0.2


def _fields(seen: CheckInput, name: str) -> dict[str, Any] | None:
    outcome = seen.outcomes.get(name)
    if outcome is None or outcome.output is None:
        return None
    return dict(outcome.output.get("fields", {}))


def check_receipt_fields(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """Validators on the fields the verdict gives, and where the model and the rules disagree.

    `experts` names the model expert, then the rule expert."""
    model_name, rules_name = spec.experts
    model, rules = _fields(seen, model_name), _fields(seen, rules_name)
    given = model if model is not None else rules or {}
    problems = [Problem(issue.message, ISSUE_PENALTY) for issue in validate_fields(given)]
    if model is not None and rules is not None:
        problems += [
            Problem(
                f"{d.field} disagrees: model {d.model}, rules {d.rules}",
                DISAGREEMENT_PENALTY.get(d.field, 0.1),
            )
            for d in fields_agree(model, rules)
        ]
    return problems


def _model(name: str, build: Any, task: str, offline: OfflineAnswer, **extra: Any) -> ExpertSpec:
    """A model expert whose prompt (naming `task`) a builder makes, answered offline by `offline`."""
    return ExpertSpec(name=name, type=ExpertType.MODEL, build=build, task=task, offline=offline, **extra)


def _rule(name: str, rule: str) -> ExpertSpec:
    return ExpertSpec(name=name, type=ExpertType.RULE, rule=rule)


# The intents a support ticket's analysis names: the rules' signals, the semantic routes'
# (examples/routes/support_intents.jsonl) and "general".
SUPPORT_INTENTS = (
    "refund",
    "billing",
    "account",
    "account_closure",
    "shipping",
    "returns",
    "technical",
    "warranty",
    "general",
)


def _support_desk(
    name: str, intents: tuple[str, ...], section: str, role: str, **extra: Any
) -> SpecialistSpec:
    """A support specialist: the drafter told its role, retrieving from its own knowledge section."""
    return SpecialistSpec(
        name=name,
        description=role,
        intents=intents,
        instructions={"drafter": f"You are the {role} specialist of the support desk."},
        sections=(section,),
        **extra,
    )


SUPPORT_SPECIALISTS = (
    _support_desk(
        "billing_refunds",
        ("refund", "billing"),
        "billing",
        "billing and refunds",
        # money is paid out on this answer: a drafter less sure than the policy's usual bar (0.7
        # by default) goes to a stronger tier
        checks=(CheckSpec(type="confidence", threshold=0.8),),
    ),
    _support_desk("technical_issues", ("technical",), "technical", "technical issues"),
    _support_desk("account_access", ("account", "account_closure"), "account", "account and access"),
    _support_desk("shipping_returns", ("shipping", "returns"), "shipping", "shipping and returns"),
    SpecialistSpec(
        name="general_support",
        description="every other ticket, and tickets out of every specialist's scope",
        general=True,
        instructions={"drafter": "You are the general specialist of the support desk."},
    ),
)

SUPPORT = KindSpec(
    name="support",
    description="Customer support tickets: a drafted reply, checked against policy and the knowledge base.",
    payload_schema=SupportPayload.model_json_schema(),
    text=SUPPORT_TEXT,
    experts=(
        _model("drafter", _draft_prompt, "draft_reply", builtin_offline.draft_reply, grounded=True),
        _rule("policy_check", "support_policy"),
        ExpertSpec(
            name="retriever",
            type=ExpertType.RETRIEVER,
            options={"empty_reason": "no policy article matched the ticket"},
        ),
    ),
    review=(
        ReviewRule(
            type="output_at_least",
            expert="policy_check",
            field="risk",
            reasons_field="flags",
            label="policy flags",
        ),
    ),
    routing=KindRouting(intents=True),
    intents=SUPPORT_INTENTS,
    specialists=SUPPORT_SPECIALISTS,
    # a ticket that asks several things: one child per ask, each to its own specialist
    decompose=DecomposeSpec(),
    answer_field="reply",
    chat_field="text",
    builtin=True,
    validate_payload=_validator(SupportPayload),
)

DOCUMENT = KindSpec(
    name="document",
    description="Receipts and invoices: company, date, total and number, by a model and by rules.",
    payload_schema=DocumentPayload.model_json_schema(),
    text="{text}",
    experts=(
        _model("extractor", _extract_prompt, "extract_fields", builtin_offline.extract_fields),
        _rule("rule_extractor", "receipt_fields"),
    ),
    checks=(
        CheckSpec(type="receipt_fields", experts=("extractor", "rule_extractor"), on_fail=OnFail.PENALTY),
    ),
    routing=KindRouting(answered_by="rule_extractor"),
    merge=("fields",),
    chat_field="text",
    builtin=True,
    validate_payload=_validator(DocumentPayload),
)

PROMPT = KindSpec(
    name="prompt",
    description="Free-form prompts: an answer, and an independent verifier on hard ones.",
    payload_schema=PromptPayload.model_json_schema(),
    text="{prompt}",
    experts=(
        _model("answerer", _answer_prompt, "answer", builtin_offline.answer),
        _model(
            "verifier",
            _verify_prompt,
            "verify",
            builtin_offline.answer,
            answers=False,
            when=ExpertWhen.VERIFY,
        ),
    ),
    checks=(
        CheckSpec(type="agree", fields=("answer",), experts=("answerer", "verifier"), on_fail=OnFail.SCALE),
    ),
    answer_field="answer",
    chat_field="prompt",
    builtin=True,
    validate_payload=_validator(PromptPayload),
)

BUILTIN_KINDS: tuple[KindSpec, ...] = (SUPPORT, DOCUMENT, PROMPT)
BUILTIN_RULES: dict[str, Rule] = {"support_policy": support_policy, "receipt_fields": receipt_fields}
BUILTIN_CHECKS: dict[str, Check] = {"receipt_fields": check_receipt_fields}
# The kind recorded chat prompts (routing evaluations, the online replay) are routed as.
RECORDED_PROMPT_KIND = PROMPT.name
