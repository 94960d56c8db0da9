"""Choosing a document's total from its labelled amounts, and the arithmetic that backs it.

Pure: reads the text lines, finds the amounts that labels such as TOTAL, ROUNDED
TOTAL, SUBTOTAL, GST, ROUNDING, CASH and CHANGE point at, picks the total and
says which sums confirm it (cash minus change, subtotal plus tax plus rounding,
line items plus tax). Imports only the standard library and routing/document_fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from tierflow.routing.document_fields import Amount, amounts_in

CENT = Decimal("0.01")
MAX_ROUNDING = Decimal("0.10")
MAX_PARTS = 4
MAX_LABELLED = 60  # no receipt has this many labelled amounts
COLUMN_GAP = 25  # lines between a column of labels and its amounts printed further down

_EXCLUDED = re.compile(
    r"SUB\s*-?\s*TOTAL|TOTAL\s*(QTY|QUANTITY|ITEM|DISC|SAV|TAX|GST|SST|VAT|EXCL|\(EXCL|BEFORE|W/O|NO\b|PCS|UNIT)|"
    r"EXCL|BEFORE\s*(GST|TAX)|TOTAL\s*[:\-]?\s*\d+\s*(ITEM|QTY|PCS)|TOTAL\s*\d+(\.\d+)?\s*%|SUPPLIES|POINTS?\b|"
    r"SAVINGS?|DISCOUNT",
    re.IGNORECASE,
)
_FINAL = re.compile(
    r"ROUND(ED|ING)?\s*TOTAL|TOTAL\s*ROUND|NETT?\s*(TOTAL|AMOUNT|AMT)|GRAND\s*TOTAL|TOTAL.{0,12}INCL(?!UDE)|"
    r"(TOTAL|AMOUNT|AMT|BALANCE)\s*(PAYABLE|DUE)|TOTAL\s*SALES\s*\(?INCL|TO\s*BE\s*PAID|TOTAL\s*PAID",
    re.IGNORECASE,
)
_PLAIN = re.compile(r"\bTOTAL\b|\bTOTAL\s*(AMOUNT|AMT|RM|\(RM\))|\bAMOUNT\s*\(?RM\)?\s*:?$", re.IGNORECASE)
_SUBTOTAL = re.compile(r"SUB\s*-?\s*TOTAL|TOTAL.{0,20}EXCL|EXCLUDING\s*(GST|TAX)|BEFORE\s*(GST|TAX)", re.I)
_TAX = re.compile(
    r"^(TOTAL\s*)?(GST|SST|VAT|TAX|SERVICE\s*TAX|SALES\s*TAX)\b(?!.*(ID|REG|NO\b|SUMMARY))", re.I
)
_CHARGE = re.compile(r"^(SERV(ICE)?\.?\s*(CHARGE|CHG)|SVC\s*(CHARGE|CHG)|TIPS?)\b", re.IGNORECASE)
_ROUNDING = re.compile(r"ROUNDING|ROUND\s*ADJ|ADJUSTMENT", re.IGNORECASE)
_PAID = re.compile(r"^(CASH|TENDER(ED)?|PAID|PAY|PAYMENT|RECEIVED|VISA|MASTER|CARD|CREDIT)\b", re.IGNORECASE)
_CHANGE = re.compile(r"^(CHANGE|BALANCE|CHANGE\s*DUE)\b", re.IGNORECASE)
_SUMMARY = re.compile(r"(GST|TAX|SST|VAT)\s*SUMMARY|SUMMARY\s*OF\s*(GST|TAX)", re.IGNORECASE)
# "(0.02)": a negative amount as accountants print it
_AMOUNT_ONLY = re.compile(r"^[:\s]*(RM|MYR|\$)?\s*-?\(?\s*(RM|\$)?\s*[\d,]*\.\d{2}\)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class TotalCandidate:
    amount: Amount
    priority: int  # 2: a final total (rounded, nett, grand, inclusive); 1: a plain TOTAL


@dataclass
class TotalFindings:
    """Every labelled amount that bears on the total."""

    totals: list[TotalCandidate] = field(default_factory=list)
    subtotals: list[Amount] = field(default_factory=list)
    taxes: list[Amount] = field(default_factory=list)
    roundings: list[Amount] = field(default_factory=list)
    paid: list[Amount] = field(default_factory=list)
    change: list[Amount] = field(default_factory=list)
    charges: list[Amount] = field(default_factory=list)
    labelled: list[Amount] = field(default_factory=list)  # every labelled amount, in reading order
    truncated: bool = False  # stopped reading at MAX_LABELLED


def labelled_amount(lines: list[str], index: int) -> Amount | None:
    """The amount a label on line `index` points at: on the line, or on the next amount-only line."""
    own = amounts_in(lines[index], index)
    if own:
        return own[0]
    if re.search(r"\d[\d,]*\.\d\d", lines[index]):
        return None  # a number the amount pattern refused: not a label of the next line
    for ahead in range(index + 1, min(index + 3, len(lines))):
        text = lines[ahead]
        if _AMOUNT_ONLY.match(text) and amounts_in(text, ahead):
            return amounts_in(text, ahead)[0]
        if text.upper().strip(" :") not in ("", "RM", "MYR", "$"):
            return None
    return None


def _classify(findings: TotalFindings, line: str, amount: Amount) -> None:
    """File the amount under the first label that the line carries, in order of precedence."""
    if _SUBTOTAL.search(line):
        findings.subtotals.append(amount)
    elif _TAX.search(line):
        findings.taxes.append(amount)
    elif _EXCLUDED.search(line):
        return
    elif _ROUNDING.search(line) and not _FINAL.search(line):
        if abs(amount.value) < MAX_ROUNDING:
            findings.roundings.append(amount)
        else:  # "ROUNDING 72.75": the rounded total itself
            findings.totals.append(TotalCandidate(amount, 2))
    elif _FINAL.search(line) or _PLAIN.search(line):
        findings.totals.append(TotalCandidate(amount, 2 if _FINAL.search(line) else 1))
    else:
        _classify_other(findings, line, amount)


def _classify_other(findings: TotalFindings, line: str, amount: Amount) -> None:
    for label, kept in (
        (_CHARGE, findings.charges),
        (_CHANGE, findings.change),
        (_PAID, findings.paid),
    ):
        if label.search(line):
            kept.append(amount)
            return


def _is_label(line: str) -> bool:
    return bool(re.search(r"[A-Za-z]{3}", line)) and not amounts_in(line, 0)


def _is_filler(line: str) -> bool:
    return line.upper().strip(" :") in ("", "RM", "MYR", "$")


def _self_valued(line: str) -> bool:
    """A label that carries its own count ("ITEM COUNT 3", "QTY : 1"): no amount of the column is its."""
    return bool(re.search(r"[:\s]\d+$", line))


def _is_value(line: str) -> bool:
    return bool(_AMOUNT_ONLY.match(line)) and bool(amounts_in(line, 0))


def _label_block(lines: list[str], index: int) -> tuple[list[int], int]:
    """The label lines from `index` on, and the index after them; fillers and counts are skipped."""
    labels: list[int] = []
    while index < len(lines):
        line = lines[index]
        if _SUMMARY.search(line):
            break  # the tax summary is a table of its own
        if _is_label(line) and not _self_valued(line):
            labels.append(index)
        elif not (labels and (_is_filler(line) or _is_label(line))):
            break
        index += 1
    return labels, index


def _value_run(lines: list[str], index: int) -> tuple[list[Amount], int]:
    """The amount-only lines from `index` on (fillers skipped), and the index after them."""
    values: list[Amount] = []
    while index < len(lines) and (_is_value(lines[index]) or values and _is_filler(lines[index])):
        values.extend(amounts_in(lines[index], index)[:1] if _is_value(lines[index]) else [])
        index += 1
    return values, index


def _later_run(lines: list[str], index: int, count: int) -> list[Amount]:
    """The first run of exactly `count` amounts within COLUMN_GAP lines: the column printed further down."""
    end = min(len(lines), index + COLUMN_GAP)
    while index < end:
        values, after = _value_run(lines, index)
        if len(values) == count:
            return values
        index = max(after, index + 1)
    return []


def column_amounts(lines: list[str]) -> dict[int, Amount]:
    """Labels printed as one column and their amounts as the next: the i-th label gets the i-th amount.

    Tills often print "TOTAL / CASH / CHANGE" and then "18.00 / 20.00 / 2.00"; OCR reads
    the columns one after the other, sometimes with other lines between them, and a
    column may hold an amount more or less than the other (see `align_column`).
    """
    paired: dict[int, Amount] = {}
    index = 0
    while index < len(lines):
        labels, after_labels = _label_block(lines, index)
        values, after_values = _value_run(lines, after_labels)
        if len(labels) >= 2:
            paired.update(align_column(labels, values or _later_run(lines, after_labels, len(labels)), lines))
        index = max(after_values, index + 1)
    return paired


def align_column(labels: list[int], values: list[Amount], lines: list[str]) -> dict[int, Amount]:
    """Pair a column of labels with a column of amounts.

    Side by side when that makes the sums agree (cash minus change, subtotal plus tax) or,
    failing that, when no sum agrees at any shift and there are amounts for every label.
    Otherwise shifted by the few amounts (an item price, a header with no amount) that
    the other column lacks, at the one shift where the sums agree.
    """
    natural = dict(zip(labels, values, strict=False))
    if not values or _column_support(natural, lines):
        return natural
    shifts = [
        dict(zip(labels[max(0, -k) :], values[max(0, k) :], strict=False))
        for k in range(-(len(labels) - 2), len(values) - 1)
        if k
    ]
    scored = sorted(((_column_support(s, lines), s) for s in shifts), key=lambda pair: -pair[0])
    if scored and scored[0][0] > 0 and (len(scored) == 1 or scored[1][0] < scored[0][0]):
        return scored[0][1]
    return natural if len(values) >= len(labels) else {}


def _column_support(pairs: dict[int, Amount], lines: list[str]) -> int:
    """How many sums confirm the best total among these label-amount pairs alone."""
    findings = TotalFindings()
    for index, amount in sorted(pairs.items()):
        findings.labelled.append(amount)
        _classify(findings, lines[index], amount)
    return max((len(total_support(findings, c, None)) for c in findings.totals), default=0)


def find_totals(lines: list[str]) -> TotalFindings:
    findings = TotalFindings()
    columns = column_amounts(lines)
    for index, line in enumerate(lines):
        if _SUMMARY.search(line):
            break  # a tax summary repeats bases and taxes under labels that look like totals
        if not line or not re.search(r"[A-Za-z]{3}", line):
            continue
        amount = columns.get(index) or labelled_amount(lines, index)
        if amount is not None:
            if len(findings.labelled) >= MAX_LABELLED:
                findings.truncated = True  # no receipt has this many labelled amounts
                break
            findings.labelled.append(amount)
            _classify(findings, line, amount)
    return findings


def choose_total(findings: TotalFindings, items_sum: Decimal | None = None) -> TotalCandidate | None:
    """The total best confirmed by sums; ties go to the higher label, then to the later line."""
    if not findings.totals:
        return None
    ranked = [
        (len(total_support(findings, c, items_sum)), c.priority, position, c)
        for position, c in enumerate(findings.totals)
    ]
    return max(ranked, key=lambda rank: rank[:3])[3]


def _same(a: Decimal, b: Decimal) -> bool:
    """Printed amounts agree to the cent; a cent apart is a rounding step, not agreement."""
    return abs(a - b) < CENT / 2


def _within_cent(a: Decimal, b: Decimal) -> bool:
    return abs(a - b) <= CENT


def _rounded_from_earlier(findings: TotalFindings, total: TotalCandidate) -> bool:
    """A total printed after a rounding line that equals an earlier total moved by that rounding."""
    if not findings.roundings:
        return False
    rounding = findings.roundings[0]
    step = abs(rounding.value)
    return total.amount.line > rounding.line and any(
        _same(c.amount.value + r, total.amount.value)
        for c in findings.totals
        if c.amount.line < rounding.line
        for r in (step, -step)
    )


def _parts_above(findings: TotalFindings, total: TotalCandidate) -> bool:
    """The last two to four labelled amounts above the total, all non-zero, add up to it."""
    above = [a.value for a in findings.labelled if a.line < total.amount.line][-MAX_PARTS:]
    return any(
        all(above[-count:]) and _same(sum(above[-count:], Decimal(0)), total.amount.value)
        for count in range(2, len(above) + 1)
    )


def _paid_support(findings: TotalFindings, total: Decimal) -> list[str]:
    paid = [abs(p.value) for p in findings.paid]  # some tills print the tender as a negative line
    change = [abs(c.value) for c in findings.change]
    if paid and change and any(_same(p - c, total) for p in paid for c in change):
        return ["cash minus change"]
    steps = [abs(r.value) for r in findings.roundings[:1]]
    moved = [total + s for step in steps for s in (step, -step)]  # the tender pays the rounded total
    if paid and change and any(_same(p - c, m) for p in paid for c in change for m in moved):
        return ["cash minus change, rounded"]
    if paid and not change and any(_same(p, total) for p in paid):
        return ["paid exactly"]
    return []


def total_support(findings: TotalFindings, total: TotalCandidate, items_sum: Decimal | None) -> list[str]:
    """The sums that confirm `total`, each named; empty when nothing confirms it."""
    value = total.amount.value
    support = _paid_support(findings, value)
    tax = sum((t.value for t in findings.taxes[:1]), Decimal(0))
    charge = sum((c.value for c in findings.charges[:1]), Decimal(0))
    extras = {tax + charge, tax}  # a printed tax is part of the total; a service charge may be
    step = abs(sum((r.value for r in findings.roundings[:1]), Decimal(0)))
    for sub in findings.subtotals:
        if any(_same(sub.value + t + r, value) for t in extras for r in {step, -step, Decimal(0)}):
            support.append("subtotal plus tax and rounding")
            break
    if _rounded_from_earlier(findings, total):
        support.append("total plus rounding")
    if _parts_above(findings, total):
        support.append("parts above sum to it")
    if items_sum is not None and items_sum > 0 and _within_cent(items_sum + tax, value):
        support.append("line items plus tax")
    return support


def conflicting_totals(findings: TotalFindings, chosen: TotalCandidate) -> list[Decimal]:
    """Totals at least as final as the chosen one that differ from it by more than its rounding."""
    rounding = abs(findings.roundings[0].value) if findings.roundings else Decimal(0)
    total = chosen.amount.value
    return sorted(
        {
            c.amount.value
            for c in findings.totals
            if c.priority >= chosen.priority
            and c.amount.value != total
            and not any(_same(c.amount.value + r, total) for r in (rounding, -rounding))
        }
    )
