"""Document verdicts by rules: extract a receipt's or invoice's fields, validate them, decide.

Owns the rule extractor (`extract_fields`), the validators (`validate`, and
`validate_fields` for a model's plain fields), the accept-without-a-model
decision (`rule_confidence`, `decide_document`) and the comparison of a model's
fields with the rules' (`fields_agree`). Pure: stdlib and pydantic only; must
not import Celery, SQLAlchemy, HTTP clients or provider SDKs
(tests/unit/test_layering.py). Candidate finding lives in
routing/document_fields.py, routing/document_company.py and
routing/document_totals.py, the value types in routing/document_models.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from tierflow.routing.document_company import find_company
from tierflow.routing.document_fields import (
    amounts_in,
    dates_in,
    is_oversized,
    parse_amount,
    parse_date,
    tax_ids_in,
    text_lines,
)
from tierflow.routing.document_models import (
    Disagreement,
    DocumentDecision,
    Evidence,
    ExtractedDocument,
    IssueCode,
    LineItem,
    ValidationIssue,
)
from tierflow.routing.document_totals import (
    choose_total,
    conflicting_totals,
    find_totals,
    total_support,
)

_DETACHED_CURRENCY = re.compile(r"(RM|MYR|\$)\s+-?\d[\d,]*\.\d\d\s*$", re.IGNORECASE)
REQUIRED_FIELDS = ("company", "date", "total")
# a card's expiry, a voucher's validity, the moment a copy was printed: dates that are not the document's
_OTHER_DATE = re.compile(r"EXPIR|\bEXP\b|VALID|PRINTED", re.IGNORECASE)
ACCEPT_CONFIDENCE = 0.9

_ITEM = re.compile(
    r"^(?P<desc>[A-Za-z][^\n]*?\S)\s+(?P<qty>\d{1,4})\s*[xX@*]\s*(?:RM\s*)?(?P<unit>\d+\.\d{2})"
    r"\s+(?:RM\s*)?(?P<amount>\d+\.\d{2})$"
)


def _dates(lines: list[str]) -> tuple[Evidence | None, str | None, tuple[str, ...], tuple[str, ...]]:
    """The document's date, its ISO form, other dates, and every way the date itself is printed."""
    found = [
        d for number, line in enumerate(lines) if not _OTHER_DATE.search(line) for d in dates_in(line, number)
    ]
    if not found:
        return None, None, (), ()
    labelled = [d for d in found if re.search(r"DATE|TARIKH", lines[d.line], re.IGNORECASE)]
    first = (labelled or found)[0]
    # a till prints its transaction date in digits; a spelled-out month is a header or a stamp
    numeric = [d for d in found if d.iso == first.iso and not re.search("[A-Za-z]", d.raw)]
    first = numeric[0] if numeric else first
    others = tuple(sorted({d.iso for d in found} - {first.iso}))
    forms = tuple(sorted({d.raw.upper() for d in (numeric or [first])}))
    return Evidence(value=first.raw, line_no=first.line, line=lines[first.line]), first.iso, others, forms


def _tax_id(lines: list[str]) -> Evidence | None:
    for number, line in enumerate(lines):
        for _label, value, _ in tax_ids_in(line, number):
            return Evidence(value=value, line_no=number, line=line)
    return None


def _items(lines: list[str]) -> tuple[LineItem, ...]:
    items = []
    for number, line in enumerate(lines):
        match = _ITEM.match(line)
        if match:
            items.append(
                LineItem(
                    description=match["desc"],
                    quantity=int(match["qty"]),
                    unit_price=Decimal(match["unit"]),
                    amount=Decimal(match["amount"]),
                    line_no=number,
                )
            )
    return tuple(items)


def _printed_amount(raw: str) -> str:
    """The amount as printed: a currency glued to the number stays ("RM8.20"), a spaced one goes."""
    if re.match(r"^[^\d\s-]+\d", raw):
        return raw
    match = amounts_in(raw, 0)
    return re.sub(r"^\D*", "", match[0].raw) if match else raw


def extract_fields(text: str) -> ExtractedDocument:
    """Every field the rules find in `text`, each with its evidence. Never raises on junk."""
    text = text if isinstance(text, str) else ""
    lines = text_lines(text)
    company, company_strong = find_company(lines)
    date, date_iso, other_dates, date_forms = _dates(lines)
    findings = find_totals(lines)
    items = _items(lines)
    items_sum = sum((i.amount for i in items), Decimal(0)) if items else None
    chosen = choose_total(findings, items_sum)
    tax = findings.taxes[0].value if findings.taxes else None
    total = total_amount = None
    support: list[str] = []
    conflicts: list[Decimal] = []
    if chosen is not None:
        amount = chosen.amount
        total = Evidence(value=_printed_amount(amount.raw), line_no=amount.line, line=lines[amount.line])
        total_amount = amount.value
        support = total_support(findings, chosen, items_sum)
        conflicts = conflicting_totals(findings, chosen)
    return ExtractedDocument(
        company=company,
        company_strong=company_strong,
        date=date,
        date_iso=date_iso,
        other_dates=other_dates,
        date_forms=date_forms,
        total=total,
        total_amount=total_amount,
        total_support=tuple(support),
        conflicting_totals=tuple(conflicts),
        tax=tax,
        tax_id=_tax_id(lines),
        truncated=findings.truncated or is_oversized(text),
        items=items,
    )


def _issue(code: IssueCode, field: str, message: str) -> ValidationIssue:
    return ValidationIssue(code=code, field=field, message=message)


def _date_issues(doc: ExtractedDocument) -> list[ValidationIssue]:
    if doc.date is None:
        return []
    if (doc.date_iso or parse_date(doc.date.value)) is None:
        return [_issue(IssueCode.DATE_UNPARSEABLE, "date", f"date {doc.date.value!r} does not parse")]
    if doc.other_dates:
        return [_issue(IssueCode.DATES_CONFLICT, "date", "other dates: " + ", ".join(doc.other_dates))]
    if len(doc.date_forms) > 1:
        forms = ", ".join(doc.date_forms)
        return [_issue(IssueCode.DATE_FORM_AMBIGUOUS, "date", f"one date printed several ways: {forms}")]
    return []


def _total_issues(doc: ExtractedDocument) -> list[ValidationIssue]:
    if doc.total is None:
        return []
    amount = doc.total_amount if doc.total_amount is not None else parse_amount(doc.total.value)
    if amount is None:
        return [_issue(IssueCode.TOTAL_NOT_NUMBER, "total", f"total {doc.total.value!r} is not a number")]
    issues = []
    if doc.conflicting_totals:
        others = ", ".join(str(t) for t in doc.conflicting_totals)
        issues.append(_issue(IssueCode.TOTALS_CONFLICT, "total", f"other totals: {others}"))
    if not doc.total_support:
        issues.append(_issue(IssueCode.TOTAL_UNCONFIRMED, "total", "no sum confirms the total"))
    if _form_uncertain(doc.total):
        why = "currency printed with the total, or thousands separated"
        issues.append(_issue(IssueCode.TOTAL_FORM_AMBIGUOUS, "total", why))
    return issues + _item_issues(doc, amount)


def _form_uncertain(total: Evidence) -> bool:
    """ "RM 9.00", "RM9.00", "1,250.00": whether a currency code or the separator belongs to the
    value is a convention that labelled receipts do not keep, glued or apart ("$9.00" they keep)."""
    coded = total.value[:1].isalpha()
    return coded or "," in total.value or bool(_DETACHED_CURRENCY.search(total.line))


def _item_issues(doc: ExtractedDocument, total: Decimal) -> list[ValidationIssue]:
    if not doc.items:
        return []
    wrong = [i for i in doc.items if abs(i.quantity * i.unit_price - i.amount) > Decimal("0.01")]
    if wrong:
        return [_issue(IssueCode.ITEMS_MISMATCH, "items", f"line {wrong[0].line_no}: qty x price != amount")]
    expected = sum((i.amount for i in doc.items), Decimal(0)) + (doc.tax or Decimal(0))
    if abs(expected - total) > Decimal("0.01"):
        return [_issue(IssueCode.ITEMS_MISMATCH, "total", f"items plus tax {expected} != total {total}")]
    return []


def validate(doc: ExtractedDocument) -> list[ValidationIssue]:
    """Everything that keeps the rules' extraction from standing on its own; empty when it can."""
    issues = [
        _issue(IssueCode.MISSING, name, f"required field {name} missing")
        for name in REQUIRED_FIELDS
        if getattr(doc, name) is None
    ]
    if doc.truncated:
        issues.append(_issue(IssueCode.TRUNCATED, "text", "longer than the rules read"))
    if doc.company is not None and not doc.company_strong:
        issues.append(
            _issue(IssueCode.COMPANY_WEAK, "company", f"{doc.company.value!r} may not be the whole name")
        )
    return issues + _date_issues(doc) + _total_issues(doc)


_ISSUE_WEIGHT = {
    IssueCode.MISSING: 0.4,
    IssueCode.DATE_UNPARSEABLE: 0.4,
    IssueCode.TOTAL_NOT_NUMBER: 0.4,
    IssueCode.ITEMS_MISMATCH: 0.4,
    IssueCode.TOTALS_CONFLICT: 0.3,
    IssueCode.DISAGREEMENT: 0.3,
    IssueCode.DATES_CONFLICT: 0.2,
    IssueCode.DATE_FORM_AMBIGUOUS: 0.2,
    IssueCode.TOTAL_UNCONFIRMED: 0.2,
    IssueCode.TOTAL_FORM_AMBIGUOUS: 0.2,
    IssueCode.COMPANY_WEAK: 0.2,
    IssueCode.TRUNCATED: 0.2,
}


def rule_confidence(issues: list[ValidationIssue]) -> float:
    """1.0 when nothing is wrong, lower for every issue by its weight, never below 0."""
    return round(max(0.0, 1.0 - sum(_ISSUE_WEIGHT[i.code] for i in issues)), 3)


def decide_document(doc: ExtractedDocument) -> DocumentDecision:
    """Accept the rules' fields without a model only when every validator passes."""
    issues = validate(doc)
    confidence = rule_confidence(issues)
    return DocumentDecision(
        accept=confidence >= ACCEPT_CONFIDENCE, confidence=confidence, issues=tuple(issues)
    )


def _normal_text(value: str) -> str:
    return " ".join(re.sub(r"[^\w&]+", " ", value.casefold()).split())


def _normal(field: str, value: object) -> str:
    text = str(value).strip()
    if field in ("total", "tax", "subtotal", "amount"):
        amount = parse_amount(text)
        return str(amount) if amount is not None else _normal_text(text)
    if field == "date":
        return parse_date(text) or _normal_text(text)
    return _normal_text(text)


def fields_agree(model_fields: Mapping[str, object], rule_fields: Mapping[str, object]) -> list[Disagreement]:
    """Fields both sides found that differ after normalising amounts, dates, case and punctuation."""
    disagreements = []
    for field in sorted(set(model_fields) & set(rule_fields)):
        model, rules = model_fields[field], rule_fields[field]
        if model in (None, "") or rules in (None, ""):
            continue
        if _normal(field, model) != _normal(field, rules):
            disagreements.append(Disagreement(field=field, model=str(model), rules=str(rules)))
    return disagreements


def validate_fields(fields: Mapping[str, object]) -> list[ValidationIssue]:
    """Validators for plain fields, such as a model's extraction: present, date parses, total a number."""
    issues = [
        _issue(IssueCode.MISSING, name, f"required field {name} missing")
        for name in REQUIRED_FIELDS
        if fields.get(name) in (None, "")
    ]
    date, total = fields.get("date"), fields.get("total")
    if date not in (None, "") and parse_date(str(date)) is None:
        issues.append(_issue(IssueCode.DATE_UNPARSEABLE, "date", f"date {date!r} does not parse"))
    if total not in (None, "") and parse_amount(str(total)) is None:
        issues.append(_issue(IssueCode.TOTAL_NOT_NUMBER, "total", f"total {total!r} is not a number"))
    return issues


__all__ = [
    "Disagreement",
    "DocumentDecision",
    "Evidence",
    "ExtractedDocument",
    "IssueCode",
    "LineItem",
    "ValidationIssue",
    "decide_document",
    "extract_fields",
    "fields_agree",
    "rule_confidence",
    "validate",
    "validate_fields",
]
