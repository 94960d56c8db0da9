"""Finding candidate fields in a document's OCR text: amounts, dates, company, tax ids.

Pure and low level: regular expressions and small parsers that turn text lines
into candidates with the line they came from. Choosing between candidates and
judging them lives in routing/documents.py. Imports only the standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

MAX_CHARS = 200_000  # OCR text beyond this is not a receipt; the rest is ignored
MAX_LINE_CHARS = 400
MAX_LINES = 2_000

_CURRENCY = r"(?:RM|MYR|USD|EUR|SGD|S\$|\$|€|£)"
AMOUNT = re.compile(
    rf"(?<![\w.,/-])(?P<raw>(?P<lead>-)?(?P<cur>{_CURRENCY})?\s?(?P<sign>-)?\s?"
    rf"(?P<num>\d{{1,3}}(?:,\d{{3}})+\.\d{{2}}|\d{{0,7}}\.\d{{2}}))(?![\d%/-]|\.\d)",
    re.IGNORECASE,
)

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_MON = r"(?P<mon>JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEPT?|OCT|NOV|DEC)[A-Z]*"
DATE_PATTERNS = (
    re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?!\d)"),
    re.compile(
        r"(?<![\d.])(?P<d>\d{1,2})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<y>(?:19|20)?\d{2})(?![\d.])"
    ),
    re.compile(rf"(?<!\d)(?P<d>\d{{1,2}})[-/ ]?{_MON}[-/ ,]*(?P<y>(?:19|20)?\d{{2}})(?!\d)", re.IGNORECASE),
    re.compile(rf"(?<![A-Z]){_MON}\.? (?P<d>\d{{1,2}}),? (?P<y>(?:19|20)\d{{2}})(?!\d)", re.IGNORECASE),
)

TAX_ID = re.compile(
    r"(?P<label>GST|SST|VAT|TAX|TIN)"
    r"[\w .]{0,16}?(?:NO|ID|NUMBER|REG)?\s*\.?\s*[:#]?\s*"
    r"(?P<id>[A-Z]{0,3}\d[\d-]{4,}[A-Z]?)",
    re.IGNORECASE,
)

LEGAL_FORM = re.compile(
    r"\b(SDN\.?\s*BHD|S/B|BHD|BERHAD|PLT|LLP|LLC|LTD|LIMITED|INC|CORP(?:ORATION)?|GMBH|ENTERPRISES?|TRADING)\b\.?",
    re.IGNORECASE,
)
TRADE_WORD = re.compile(
    r"\b(RESTAURANT|RESTORAN|HARDWARE|STATIONERY|BOOKSTORE|MARKETING|SUPERMARKET|MART|PHARMACY|FARMASI|"
    r"KEDAI|CAFE|BAKERY|HOLDINGS|INDUSTRIES|COMPANY|SHOP|STORE)\b",
    re.IGNORECASE,
)
# "OWNED BY:", "OPERATED BY", and their misreadings ("DWNER BY"): one word, then BY
_OWNER_PREFIX = re.compile(r"^([A-Z]+\s*BY\b\s*:?\s*|DIMILIKI\s*(OLEH)?\s*:?\s*)", re.IGNORECASE)
_COUNTER_PREFIX = re.compile(r"^#\d+\s+")  # a till's receipt counter printed before the name
_NOT_COMPANY = re.compile(
    r"(INVOICE|RECEIPT|TEL\b|FAX|PHONE|GST|JALAN|\bJLN\b|LOT\b|NO\.?\s*\d|TAMAN|\d{5}|@|WWW|HTTP|CASHIER|DATE|"
    # what a till prints around the name: the kind of slip, a greeting, the returns policy
    r"\bCASH\s*(SALES?|BILL)\b|\bPOSTED\b|\bCOPY\b|\bREPRINT|\bWELCOME\b|\bTHANK|\bGOODS\s*SOLD)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Amount:
    """One money amount found in a line."""

    raw: str
    value: Decimal
    line: int


@dataclass(frozen=True)
class DateFound:
    raw: str
    iso: str
    line: int


def is_oversized(text: str) -> bool:
    """Longer than the extractor reads: what lies past the caps is not looked at."""
    return len(text) > MAX_CHARS or text.count("\n", 0, MAX_CHARS) >= MAX_LINES


def text_lines(text: str) -> list[str]:
    """The document's lines, stripped and capped; empty lines kept so numbers stay stable."""
    return [line.strip()[:MAX_LINE_CHARS] for line in text[:MAX_CHARS].splitlines()[:MAX_LINES]]


def parse_amount(raw: str) -> Decimal | None:
    """A money string as a Decimal: "RM 1,234.50" -> 1234.50; None when it is not one."""
    cleaned = re.sub(rf"^\s*{_CURRENCY}", "", raw.strip(), flags=re.IGNORECASE)
    cleaned = cleaned.replace(",", "").replace(" ", "")
    if not re.fullmatch(r"-?\d+(?:\.\d{1,2})?", cleaned):
        return None
    try:
        return Decimal(cleaned).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None


def amounts_in(line: str, number: int) -> list[Amount]:
    if "." not in line:  # every amount has its cents; most lines have no full stop at all
        return []
    found = []
    for match in AMOUNT.finditer(line):
        value = Decimal("0" + match["num"].replace(",", ""))
        negative = match["sign"] or match["lead"]
        found.append(Amount(match["raw"].strip(), -value if negative else value, number))
    return found


def _year(raw: str) -> int:
    year = int(raw)
    return year + 2000 if year < 100 else year


def _iso(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _match_iso(match: re.Match[str]) -> str | None:
    groups = match.groupdict()
    year = _year(groups["y"])
    day = int(groups["d"])
    if groups.get("mon"):
        return _iso(year, _MONTHS[groups["mon"].upper()[:3]], day)
    month = int(groups["m"])
    # day first, as on the receipts this reads; month first only when day first is impossible
    return _iso(year, month, day) or _iso(year, day, month)


def parse_date(raw: str) -> str | None:
    """A date string in any supported format as ISO yyyy-mm-dd; None when it does not parse."""
    text = raw.strip()
    if re.fullmatch(r"(?:19|20)\d{6}", text):
        return _iso(int(text[:4]), int(text[4:6]), int(text[6:]))
    for pattern in DATE_PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return _match_iso(match)
    return None


def dates_in(line: str, number: int) -> list[DateFound]:
    if sum(ch.isdigit() for ch in line) < 3:  # no date without a day and a year
        return []
    found: list[DateFound] = []
    taken: list[tuple[int, int]] = []
    for pattern in DATE_PATTERNS:
        for match in pattern.finditer(line):
            if any(start < match.end() and match.start() < end for start, end in taken):
                continue
            iso = _match_iso(match)
            if iso is not None:
                taken.append(match.span())
                found.append(DateFound(match.group(0).strip(" ,"), iso, number))
    return found or _compact_dates(line, number)


_COMPACT_DATE = re.compile(r"\bDATE\b\W*((?:19|20)\d{6})(?!\d)", re.IGNORECASE)


def _compact_dates(line: str, number: int) -> list[DateFound]:
    """yyyymmdd, only where a DATE label vouches for it: bare, it is any eight digits."""
    match = _COMPACT_DATE.search(line)
    iso = parse_date(match[1]) if match else None
    return [DateFound(match[1], iso, number)] if match and iso else []


def tax_ids_in(line: str, number: int) -> list[tuple[str, str, int]]:
    """(label, id, line) for every tax or registration id in the line."""
    return [(m["label"].upper(), m["id"], number) for m in TAX_ID.finditer(line)]


def name_like(line: str) -> bool:
    """Mostly letters, and no address, phone or heading words."""
    letters = sum(ch.isalpha() for ch in line)
    return letters >= 3 and letters >= len(line) * 0.5 and not _NOT_COMPANY.search(line)


def company_name(line: str) -> str | None:
    """The legal name in a line, cut after its legal form: "ACME SDN BHD (12345-X)" -> "ACME SDN BHD"."""
    forms = list(LEGAL_FORM.finditer(line))
    if not forms:
        return None
    head = _COUNTER_PREFIX.sub("", line[: forms[-1].end()].strip())
    name = _OWNER_PREFIX.sub("", head).strip(" ,:-")
    name = re.sub(r"S/B\.$", "S/B", name)  # a slash abbreviation takes no full stop
    return name if name_like(name) else None


_REGISTRATION = re.compile(
    r"^\(?\s*((CO(MPANY)?|ROC|REG(ISTRATION)?)\.?\s*(NO|REG)?\.?\s*[:.]?\s*)?[A-Z]{0,3}\d{5,12}\s*-?\s*[A-Z]\s*\)?$",
    re.IGNORECASE,
)


def registration(line: str) -> bool:
    """A line that is only a business registration number: "(81109-A)", "COMPANY NO: 256628-W"."""
    return bool(_REGISTRATION.match(line.strip()))


_TRAILING_REGISTRATION = re.compile(r"\s*\(\s*[A-Z]{0,3}\d{5,12}\s*-?\s*[A-Z]\s*\)\s*$", re.IGNORECASE)


def without_registration(line: str) -> str:
    """The line without a registration number in brackets at its end: "ACME (12345-X)" -> "ACME"."""
    return _TRAILING_REGISTRATION.sub("", line)


def owned_by(line: str) -> bool:
    """ "OWNED BY: X SDN BHD": the shop's trade name and its owner differ; which is the company?"""
    return bool(_OWNER_PREFIX.search(line.strip()))


# Words that company names on receipts are made of; a word one letter away from
# one of them is an OCR misreading ("ENTERORISE") that would make the name wrong.
BUSINESS_WORDS = frozenset(
    [
        "ENTERPRISE",
        "ENTERPRISES",
        "TRADING",
        "HARDWARE",
        "RESTAURANT",
        "RESTORAN",
        "STATIONERY",
        "BOOKSTORE",
        "MARKETING",
        "SUPERMARKET",
        "PHARMACY",
        "FARMASI",
        "BAKERY",
        "BAKERIES",
        "HOLDINGS",
        "INDUSTRIES",
        "COMPANY",
        "SERVICE",
        "SERVICES",
        "MALAYSIA",
        "CORPORATION",
        "LIMITED",
        "BERHAD",
        "SDN",
        "BHD",
        "RESOURCES",
        "MOTOR",
        "MOTORS",
        "ELECTRICAL",
        "CENTRE",
        "CENTER",
        "BOOK",
        "BOOKS",
        "FOOD",
        "FOODS",
        "GROUP",
        "INTERNATIONAL",
        "SUPPLY",
        "SUPPLIES",
        "PRODUCTS",
        "DISTRIBUTOR",
        "PAPER",
    ]
)


def _one_edit_apart(word: str, known: str) -> bool:
    if abs(len(word) - len(known)) > 1 or word == known:
        return False
    if len(word) == len(known):
        return sum(a != b for a, b in zip(word, known, strict=True)) == 1
    short, long = sorted((word, known), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


MIN_MISREAD_LETTERS = 4  # shorter words ("SDN", "BHD") are abbreviations, not misread


def _misreading(word: str, known: str) -> bool:
    """One letter from a long business word, and not merely its plural ("RESTAURANTS")."""
    plural = word == known + "S" or known == word + "S"
    return len(known) >= MIN_MISREAD_LETTERS and not plural and _one_edit_apart(word, known)


def misread_words(name: str) -> list[str]:
    """Words of `name` that look like an OCR misreading of a common business word."""
    words = re.findall(r"[A-Z]{4,}", name.upper())
    return [w for w in words if w not in BUSINESS_WORDS and any(_misreading(w, k) for k in BUSINESS_WORDS)]


def starts_mid_name(name: str) -> bool:
    """Nothing but the legal form, business words ("RESTAURANT SDN BHD"), or an "&", "(" or
    "CO." before it: the name began a line above."""
    head = LEGAL_FORM.split(name, maxsplit=1)[0].strip()
    words = re.findall(r"[A-Z]+", head.upper())
    generic = bool(words) and all(w in BUSINESS_WORDS or TRADE_WORD.fullmatch(w) for w in words)
    return not head or generic or head[0] in "&(" or head.upper().startswith("CO.")


def trade_name(line: str) -> bool:
    """A line that names a shop by its trade (RESTAURANT, MART...) and is not an address or heading."""
    return bool(TRADE_WORD.search(line)) and name_like(line)


def balanced(name: str) -> bool:
    return name.count("(") == name.count(")")
