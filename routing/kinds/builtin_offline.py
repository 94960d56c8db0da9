"""Offline answers to the built-in kinds' model experts, by model strength.

Each built-in model expert carries its answerer (`ExpertSpec.offline`), so the fake
provider and the local provider server answer the built-in prompts through the
registry as they answer a declared kind's experts (routing/kinds/offline.py). A weaker
model is less sure of hard inputs and makes the mistakes weak models make (it takes
the first amount it sees as the total).

Pure: the standard library only.
"""

from __future__ import annotations

import json
import re

from tierflow.routing.kinds.offline import confidence

TOTAL_LINE = re.compile(
    r"^(?P<label>.*?\b(sub\s?-?total|total)\b[^\d\n]*)(?P<amount>\d{1,3}(?:,\d{3})*\.\d{2}|\d+\.\d{2})",
    re.I | re.MULTILINE,
)
DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4})\b")
NUMBER = re.compile(
    r"\b(?:invoice|receipt|claim|bill|doc(?:ument)?)\s*(?:no\.?|number|#|id)\s*[:#]?\s*([A-Z0-9-]{3,})", re.I
)
ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([+\-*/x×])\s*(-?\d+(?:\.\d+)?)")

REPLIES = (
    (
        re.compile(r"\b(password|log ?in|locked|2fa)\b", re.I),
        "I have sent a password reset link to the address on your account; it is valid for 30 minutes.",
    ),
    (
        re.compile(r"\b(refund|money back|reimburse)", re.I),
        "I have opened a refund request for this order; you will see the amount on your statement "
        "within 5-7 business days.",
    ),
    (
        re.compile(r"\b(deliver|shipping|package|parcel|tracking)", re.I),
        "Your parcel is with the carrier; I have attached the tracking link and will follow up "
        "if it has not moved in 48 hours.",
    ),
    (
        re.compile(r"\b(invoice|charged?|billing|subscription)\b", re.I),
        "I have checked your billing history and corrected the charge; "
        "an updated invoice is on its way to you.",
    ),
    (
        re.compile(r"\b(error|crash|bug|api|sync)", re.I),
        "Thank you for the details. Our engineers have reproduced the problem and a fix is scheduled; "
        "here is a workaround meanwhile.",
    ),
)
FALLBACK_REPLY = "Thank you for reaching out; I am looking into this and will get back to you today."


def draft_reply(text: str, strength: float) -> str:
    """A support ticket's reply: the canned one for the first topic the ticket mentions."""
    reply = next((r for pattern, r in REPLIES if pattern.search(text)), FALLBACK_REPLY)
    return json.dumps({"reply": reply, "confidence": confidence(strength, text)})


def _total(text: str, strength: float) -> str | None:
    lines = list(TOTAL_LINE.finditer(text))
    if not lines:
        return None
    if strength < 0.7:  # weak models take the first amount labelled anything like total
        return lines[0].group("amount").replace(",", "")
    grand = [m for m in lines if not re.search(r"sub", m.group("label"), re.I)]
    return (grand or lines)[-1].group("amount").replace(",", "")


def extract_fields(text: str, strength: float) -> str:
    """A document's fields: the first line as the company, the first date, the total, the number."""
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), None)
    date = DATE.search(text)
    number = NUMBER.search(text)
    fields = {
        "company": first_line,
        "date": date.group(1) if date else None,
        "total": _total(text, strength),
        "document_number": number.group(1) if number else None,
    }
    return json.dumps({"fields": fields, "confidence": confidence(strength, text)})


def answer(text: str, strength: float) -> str:
    """A prompt's answer: the arithmetic it asks, worked out, else its first sentence."""
    match = ARITHMETIC.search(text)
    if match:
        left, op, right = float(match.group(1)), match.group(2), float(match.group(3))
        value = {
            "+": left + right,
            "-": left - right,
            "*": left * right,
            "x": left * right,
            "×": left * right,
            "/": left / right if right else float("nan"),
        }[op]
        result = f"{value:.10f}".rstrip("0").rstrip(".")
    else:
        sentence = re.split(r"(?<=[.?!])\s", text.strip(), maxsplit=1)[0]
        result = f"In short: {sentence[:200]}"
    return json.dumps({"answer": result, "confidence": confidence(strength, text)})
