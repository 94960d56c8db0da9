"""Finding the company that heads a receipt or invoice, and whether the finding is strong.

Owns choosing the company line among the first lines of a document: a legal
name ("ACME SDN BHD"), else a name over its registration number, a line naming
a trade, or a lone heading over the address; and the self-checks that call a
finding weak (another name beside it, a name cut short, an OCR misreading).
Pure: imports only the standard library, routing/document_fields.py and
routing/document_models.py.
"""

from __future__ import annotations

import re

from tierflow.routing.document_fields import (
    balanced,
    company_name,
    misread_words,
    name_like,
    owned_by,
    registration,
    starts_mid_name,
    trade_name,
    without_registration,
)
from tierflow.routing.document_models import Evidence

COMPANY_LINES = 8  # a company heads its receipt


def find_company(lines: list[str]) -> tuple[Evidence | None, bool]:
    """The company heading the document, and whether it is a strong finding (legal form, whole name)."""
    for number, line in enumerate(lines[:COMPANY_LINES]):
        line = _wrapped(lines, number)
        name = company_name(line)
        if name is None:
            continue
        previous = lines[number - 1] if number else ""
        if starts_mid_name(name) or previous.endswith("&"):
            name, strong = f"{previous} {name}".strip(), name_like(previous)
        else:
            strong = not name_like(previous) or _repeats_brand(previous, name)
        strong = strong and balanced(line) and not owned_by(line)
        return Evidence(value=name, line_no=number, line=line), strong and not misread_words(name)
    return _shop(lines)


def _shop(lines: list[str]) -> tuple[Evidence | None, bool]:
    """No legal form: a name over its registration number, else the first line naming a trade.

    Strong when the line heads the text alone (no other name-like line just above it).
    """
    heading = lines[:COMPANY_LINES]
    registered = [
        n for n, line in enumerate(heading[:-1]) if name_like(line) and registration(heading[n + 1])
    ]
    traded = [n for n, line in enumerate(heading) if trade_name(line)]
    for number in registered[:1] or traded[:1]:
        line, previous = _wrapped(lines, number), lines[number - 1] if number else ""
        whole = not line.endswith(("&", "-", ",")) and balanced(line) and not misread_words(line)
        return Evidence(value=line, line_no=number, line=line), whole and not name_like(previous)
    return _lone_heading(heading)


def _lone_heading(heading: list[str]) -> tuple[Evidence | None, bool]:
    """The first name-like line, with its registration number cut off ("ACME (12345-X)" -> "ACME").

    Only when the line below it is not a name too (it is an address, a phone, a tax id);
    strong when the name is whole and no line below repeats it at greater length ("ACME" over "ACME
    SETIA ALAM": which of them is the company is a convention, not a fact of the text).
    """
    for number, line in enumerate(heading):
        name = without_registration(line)
        if not name_like(name):
            continue
        following = heading[number + 1] if number + 1 < len(heading) else ""
        if name_like(without_registration(following)):
            return None, False  # two names, or one over two lines: the rules cannot tell
        whole = not name.endswith(("&", "-", ",")) and balanced(name) and not misread_words(name)
        strong = whole and not _extended_below(heading[number + 1 :], name)
        return Evidence(value=name, line_no=number, line=line), strong
    return None, False


def _extended_below(below: list[str], name: str) -> bool:
    """A later line starts with the name, up to one misread letter, and goes on."""
    upper = name.upper()
    return any(
        len(line) > len(name) and sum(a != b for a, b in zip(line.upper(), upper, strict=False)) <= 1
        for line in below
    )


def _wrapped(lines: list[str], number: int) -> str:
    """The line with its continuation when the name wraps: an open "(" that the next line closes
    before a legal form ("ACME (SETIA" / "ALAM) SDN BHD"), or a trailing "&" before a name-like line."""
    line = lines[number]
    following = lines[number + 1] if number + 1 < len(lines) else ""
    opens = line.count("(") > line.count(")") and following.count(")") > following.count("(")
    if opens and company_name(following) is not None and following.find(")") < following.upper().rfind(" "):
        return f"{line} {following}"
    if line.endswith("&") and name_like(following) and company_name(following) is None:
        return f"{line} {following}"
    return line


def _repeats_brand(previous: str, name: str) -> bool:
    """A brand line above its legal name ("ACME" over "ACME TRADING SDN BHD", "JOE'S" over "JOES
    SDN BHD") names the same company."""
    return _letters(name).startswith(_letters(previous) + " ")


def _letters(line: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", line.upper()).split())
