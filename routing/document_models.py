"""The values the document rules produce: evidence, extracted fields, issues, decisions.

Pure data (pydantic, frozen); owns no logic. Must not import anything but the
standard library and pydantic.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum

from pydantic import BaseModel, ConfigDict


class Evidence(BaseModel):
    """A field's value as printed, with the line it came from (0-based)."""

    model_config = ConfigDict(frozen=True)

    value: str
    line_no: int
    line: str


class LineItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal
    line_no: int


class ExtractedDocument(BaseModel):
    """What the rule extractor found, with the evidence the validators judge."""

    model_config = ConfigDict(frozen=True)

    company: Evidence | None = None
    company_strong: bool = False  # the whole name, unambiguous: legal form, registration or lone heading
    date: Evidence | None = None
    date_iso: str | None = None
    other_dates: tuple[str, ...] = ()  # ISO dates that differ from `date_iso`
    date_forms: tuple[str, ...] = ()  # every numeric form of `date_iso` ("29-03-2018", "29/03/2018")
    total: Evidence | None = None
    total_amount: Decimal | None = None
    total_support: tuple[str, ...] = ()
    conflicting_totals: tuple[Decimal, ...] = ()
    tax: Decimal | None = None
    tax_id: Evidence | None = None
    items: tuple[LineItem, ...] = ()
    truncated: bool = False  # the text was longer than the extractor reads

    def fields(self) -> dict[str, str | None]:
        """The plain fields, as the rule extractor expert reports them."""
        return {
            "company": self.company.value if self.company else None,
            "date": self.date.value if self.date else None,
            "total": self.total.value if self.total else None,
            "tax_id": self.tax_id.value if self.tax_id else None,
        }


class IssueCode(str, Enum):
    MISSING = "missing"
    DATE_UNPARSEABLE = "date_unparseable"
    DATES_CONFLICT = "dates_conflict"
    DATE_FORM_AMBIGUOUS = "date_form_ambiguous"
    TOTAL_NOT_NUMBER = "total_not_number"
    TOTAL_FORM_AMBIGUOUS = "total_form_ambiguous"
    TOTAL_UNCONFIRMED = "total_unconfirmed"
    TOTALS_CONFLICT = "totals_conflict"
    ITEMS_MISMATCH = "items_mismatch"
    COMPANY_WEAK = "company_weak"
    TRUNCATED = "truncated"
    DISAGREEMENT = "disagreement"


class ValidationIssue(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: IssueCode
    field: str
    message: str


class Disagreement(BaseModel):
    """A field on which the model's extraction and the rules' differ after normalising."""

    model_config = ConfigDict(frozen=True)

    field: str
    model: str | None
    rules: str | None


class DocumentDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    accept: bool
    confidence: float
    issues: tuple[ValidationIssue, ...]
