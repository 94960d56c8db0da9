"""The rule experts a kind can name: extractors and validators that need no model.

Each takes (payload, the job's text, policy, the expert's options) and returns an
ExpertOutput. Python plug-ins add more under new names. Pure: the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tierflow.routing.experts import ExpertOutput
from tierflow.routing.kinds.spec import Rule
from tierflow.routing.policy import Policy

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fourteen": 14, "fifteen": 15,
    "thirty": 30, "sixty": 60, "ninety": 90,
}  # fmt: skip
UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
PERIOD = re.compile(
    r"\b(?P<count>\d{1,4}|" + "|".join(NUMBER_WORDS) + r")(?:\s*\(\d{1,4}\))?[\s-]*"
    r"(?:(?:calendar|business|working)\s+)?(?P<unit>day|week|month|year)s?\b",
    re.IGNORECASE,
)
DATE = re.compile(
    r"\b(\d{4}-\d{2}-\d{2}|\d{1,2}[/.]\d{1,2}[/.]\d{4}|\d{1,2} (?:January|February|March|April|May|June|"
    r"July|August|September|October|November|December) \d{4})\b"
)
AMOUNT = re.compile(r"(?:\$|€|£|\b(?:USD|EUR|GBP)\s?)(\d{1,3}(?:,\d{3})+(?:\.\d{2})?|\d+(?:\.\d{2})?)")


def _days(match: re.Match[str]) -> int:
    count = match.group("count").lower()
    number = int(count) if count.isdigit() else NUMBER_WORDS[count]
    return number * UNIT_DAYS[match.group("unit").lower()]


def period_rule(
    payload: dict[str, Any], text: str, policy: Policy, options: Mapping[str, Any]
) -> ExpertOutput:
    """A period in days: the one written closest to the word `near` (within `window` characters,
    before or after it: "30 days' notice", "notice of 30 days")."""
    near = str(options.get("near", "notice"))
    field = str(options.get("field", f"{near}_period_days"))
    window = int(options.get("window", 80))
    best: tuple[int, re.Match[str]] | None = None
    for anchor in re.finditer(rf"\b{re.escape(near)}\b", text, re.IGNORECASE):
        for match in PERIOD.finditer(text, max(0, anchor.start() - window), anchor.end() + window):
            distance = max(anchor.start() - match.end(), match.start() - anchor.end(), 0)
            if best is None or distance < best[0]:
                best = (distance, match)
    if best is None:
        return ExpertOutput({field: None, "evidence": None}, confidence=0.3)
    return ExpertOutput({field: _days(best[1]), "evidence": best[1].group(0)}, confidence=0.9)


def dates_rule(
    payload: dict[str, Any], text: str, policy: Policy, options: Mapping[str, Any]
) -> ExpertOutput:
    """Every date the text names, in order, once each."""
    found = list(dict.fromkeys(DATE.findall(text)))
    return ExpertOutput({str(options.get("field", "dates")): found}, confidence=0.9 if found else 0.4)


def amounts_rule(
    payload: dict[str, Any], text: str, policy: Policy, options: Mapping[str, Any]
) -> ExpertOutput:
    """Every currency amount the text names, as numbers."""
    amounts = [float(value.replace(",", "")) for value in AMOUNT.findall(text)]
    return ExpertOutput({str(options.get("field", "amounts")): amounts}, confidence=0.9)


def keywords_rule(
    payload: dict[str, Any], text: str, policy: Policy, options: Mapping[str, Any]
) -> ExpertOutput:
    """Which of the option `words` the text contains; `risk` rises with each."""
    words = [str(word) for word in options.get("words", ())]
    lowered = text.lower()
    flags = [word for word in words if re.search(rf"\b{re.escape(word.lower())}\b", lowered)]
    risk = min(1.0, float(options.get("risk_per_word", 0.75)) * len(flags))
    return ExpertOutput({"flags": flags, "risk": risk}, confidence=1.0)


RULES: dict[str, Rule] = {
    "period": period_rule,
    "dates": dates_rule,
    "amounts": amounts_rule,
    "keywords": keywords_rule,
}
