"""Offline answers to a declared kind's model experts: valid against the answer schema, deterministic.

The fake provider and the local provider server answer a declared expert's prompt
from its system message (the answer schema follows SCHEMA_MARKER) and its user
message, so a user's kind runs with no model and no key. How each value is made:

- an enum: the first value whose words appear in the input, else one chosen by a
  stable hash of the input (the same input always gets the same value);
- a boolean: true when a word of its field name, or a word like "urgent", appears;
- a number or integer: the number written closest to the first word of its field
  name (for a `*_days` field, weeks and months are counted in days by a strong model
  only: a weak one takes the number as written);
- a string: quotes the input, labelled "offline:" so no one mistakes it for a model's;
- an array: one item made the same way per capitalised name or date found, at least
  `minItems`; an object: each property.

Every offline answer's confidence is `confidence(strength, input)`: a strong model is
sure of easy inputs, a weak one less so of long or intricate ones.

Pure: the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from tierflow.routing.kinds.prompts import SCHEMA_MARKER

LABEL = "offline:"
NUMBER = re.compile(r"\b(\d+(?:\.\d+)?)\b(?:\s*\(\d+\))?\s*(day|week|month|year)?", re.IGNORECASE)
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "six": 6, "thirty": 30, "sixty": 60, "ninety": 90}
SPELLED = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
YES_WORDS = re.compile(r"\b(urgent|asap|immediately|outage|down|critical|emergency)\b", re.IGNORECASE)
DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
NAME = re.compile(r"\b([A-Z][A-Za-z&]+(?: [A-Z][A-Za-z&]+)* (?:Ltd|LLC|Inc|GmbH|plc|Corp|AG|BV))\b")


COMPLEX = re.compile(
    r"\b(however|although|intermittent\w*|integration|webhook|api|migrat\w*|regulat\w*|"
    r"discrepanc\w*|reconcil\w*|chargeback|dispute|multiple|several|audit|prove|derive)\b",
    re.I,
)


def hardness(text: str) -> float:
    """How hard a text is for a model, in [0, 1]."""
    words = len(text.split())
    score = 0.05 + min(words, 500) / 1000 + 0.14 * len(COMPLEX.findall(text)) + 0.06 * text.count("?")
    return min(1.0, score)


def confidence(strength: float, text: str) -> float:
    """The confidence an offline model of `strength` gives its answer to `text`."""
    return round(max(0.05, min(0.99, 0.5 + strength - 1.1 * hardness(text))), 3)


def declared_schema(system: str) -> dict[str, Any] | None:
    """The answer schema a declared expert's system message carries, or None."""
    if SCHEMA_MARKER not in system:
        return None
    try:
        schema = json.loads(system.split(SCHEMA_MARKER, 1)[1].strip())
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


def _pick(options: list[Any], text: str, salt: str) -> Any:
    lowered = text.lower()
    for option in options:
        if isinstance(option, str) and re.search(rf"\b{re.escape(option.lower())}\b", lowered):
            return option
    digest = hashlib.sha256(f"{salt}\n{text}".encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _words(name: str) -> list[str]:
    return [word for word in re.split(r"[_\W]+", name.lower()) if word]


def _number(name: str, text: str, strength: float, integer: bool) -> float | int | None:
    words = _words(name)
    spelled = SPELLED.sub(lambda m: str(NUMBER_WORDS[m.group(1).lower()]), text)
    anchor = re.search(rf"\b{re.escape(words[0])}", spelled, re.IGNORECASE) if words else None
    numbers = list(NUMBER.finditer(spelled))
    if not numbers:
        return None
    if anchor is not None:  # the number written closest to the field's first word
        numbers.sort(key=lambda m: max(anchor.start() - m.end(), m.start() - anchor.end(), 0))
    match = numbers[0]
    value = float(match.group(1))
    unit = (match.group(2) or "day").lower()
    if "days" in words and strength >= 0.7:  # weak models take "3 months" as 3
        value *= UNIT_DAYS[unit]
    return int(value) if integer else value


def _string(schema: dict[str, Any], text: str) -> str:
    if schema.get("format") == "date" or "date" in str(schema.get("description", "")).lower():
        found = DATE.search(text)
        if found:
            return found.group(1)
    quote = " ".join(text.split())
    limit = int(schema.get("maxLength", 160))
    value = f"{LABEL} {quote}"[:limit]
    return (
        value if len(value) >= int(schema.get("minLength", 0)) else value.ljust(int(schema["minLength"]), ".")
    )


def _value(name: str, schema: dict[str, Any], text: str, strength: float) -> Any:
    kinds = schema.get("type", "string")
    kind = next((k for k in kinds if k != "null"), "null") if isinstance(kinds, list) else kinds
    if "enum" in schema:
        return _pick(list(schema["enum"]), text, name)
    if kind == "boolean":
        hit = any(re.search(rf"\b{re.escape(w)}", text, re.I) for w in _words(name)) or YES_WORDS.search(text)
        return bool(hit)
    if kind in ("integer", "number"):
        value = _number(name, text, strength, kind == "integer")
        return value if value is not None or (isinstance(kinds, list) and "null" in kinds) else 0
    if kind == "array":
        return _array(name, schema, text, strength)
    if kind == "object":
        return _object(schema, text, strength)
    if kind == "null":
        return None
    if "date" in _words(name):
        found = DATE.search(text)
        if found:
            return found.group(1)
    return _string(schema, text)


def _array(name: str, schema: dict[str, Any], text: str, strength: float) -> list[Any]:
    items = schema.get("items", {"type": "string"})
    found = list(dict.fromkeys(NAME.findall(text) if "part" in name else DATE.findall(text)))
    values: list[Any] = found if items.get("type") == "string" and found else []
    while len(values) < int(schema.get("minItems", 0)):
        values.append(_value(name, items, f"{text} #{len(values)}", strength))
    return values[: int(schema.get("maxItems", len(values) or 1))]


def _object(schema: dict[str, Any], text: str, strength: float) -> dict[str, Any]:
    properties = schema.get("properties", {})
    return {
        name: _value(name, sub, text, strength) for name, sub in properties.items() if name != "confidence"
    }


def schema_answer(system: str, user: str, strength: float, confidence: float) -> str | None:
    """The JSON text a model of `strength` answers a declared expert with; None when the
    system message is not a declared expert's."""
    schema = declared_schema(system)
    if schema is None:
        return None
    body = _object(schema, user, strength)
    if "confidence" in schema.get("properties", {}):
        body["confidence"] = confidence
    return json.dumps(body, sort_keys=True)
