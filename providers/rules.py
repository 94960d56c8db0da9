"""Deterministic answers to tierflow's own expert prompts, by model strength.

The fake provider and the local provider server answer from these rules (a declared
kind's experts from routing/kinds/offline.py),
so the demo and the tests get sensible, repeatable answers without any model.
A weaker model is less sure of hard inputs and makes the mistakes weak models
make (it takes the first amount it sees as the total).
"""

from __future__ import annotations

import json
import re

from tierflow.providers.judge_rules import offline_grade
from tierflow.routing.judging import JUDGE_TASK
from tierflow.routing.kinds.offline import schema_answer

TASK = re.compile(r"^Task: (\w+)", re.MULTILINE)
COMPLEX = re.compile(
    r"\b(however|although|intermittent\w*|integration|webhook|api|migrat\w*|regulat\w*|"
    r"discrepanc\w*|reconcil\w*|chargeback|dispute|multiple|several|audit|prove|derive)\b",
    re.I,
)
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


def hardness(text: str) -> float:
    """How hard a text is for a model, in [0, 1]."""
    words = len(text.split())
    score = 0.05 + min(words, 500) / 1000 + 0.14 * len(COMPLEX.findall(text)) + 0.06 * text.count("?")
    return min(1.0, score)


def confidence(strength: float, text: str) -> float:
    return round(max(0.05, min(0.99, 0.5 + strength - 1.1 * hardness(text))), 3)


def answer(system: str, user: str, strength: float) -> str:
    """The model's text for one of tierflow's expert prompts, or a declared kind's expert's."""
    declared = schema_answer(system, user, strength, confidence(strength, user))
    if declared is not None:
        return declared
    task = task_of(system)
    if task == JUDGE_TASK:
        return offline_grade(user, hardness, None)
    if task == "draft_reply":
        return _draft(user, strength)
    if task == "extract_fields":
        return _extract(user, strength)
    if task == "analyze":
        return _analyze(user, strength)
    if task == "coach":
        return _coach(user, strength)
    return _answer(user, strength)


def task_of(system: str) -> str:
    """The task a system message names ("Task: NAME" on a line of its own), else "answer"."""
    match = TASK.search(system)
    return match.group(1) if match else "answer"


def _coach(text: str, strength: float) -> str:
    """Where most recent failures were on the small tier, send less to small (weak models overreach)."""
    try:
        body = json.loads(text)
        failures, policy = list(body["failures"]), dict(body["policy"])
    except (ValueError, KeyError, TypeError):
        return json.dumps({"summary": "could not read the request", "changes": [], "confidence": 0.2})
    on_small = sum(1 for failure in failures if failure.get("tier") == "small")
    changes = []
    if failures and on_small * 2 >= len(failures) and policy.get("small_max_difficulty", 0) > 0.1:
        step = 0.05 if strength >= 0.7 else 0.2
        changes.append(
            {
                "field": "small_max_difficulty",
                "value": round(policy["small_max_difficulty"] - step, 3),
                "why": f"{on_small} of {len(failures)} recent failures were on the small tier",
            }
        )
    summary = f"{len(failures)} recent failures, {on_small} on the small tier"
    return json.dumps({"summary": summary, "changes": changes, "confidence": round(0.5 + strength / 2, 3)})


def _draft(text: str, strength: float) -> str:
    reply = next(
        (r for pattern, r in REPLIES if pattern.search(text)),
        "Thank you for reaching out; I am looking into this and will get back to you today.",
    )
    return json.dumps({"reply": reply, "confidence": confidence(strength, text)})


RISKY = re.compile(r"\b(lawyer|attorney|lawsuit|legal action|court|fraud|close my account)\b", re.I)
INTENT_WORDS = (
    ("refund", "refund"),
    ("invoice", "billing"),
    ("charge", "billing"),
    ("password", "account"),
    ("log in", "account"),
    ("parcel", "shipping"),
    ("deliver", "shipping"),
    ("error", "technical"),
)


def _analyze(text: str, strength: float) -> str:
    lowered = text.lower()
    intent = next((name for word, name in INTENT_WORDS if word in lowered), "general")
    risk = min(1.0, 0.5 * len(RISKY.findall(text)))
    reasons = [f"{len(text.split())} words", f"looks like a {intent} request"]
    body = {"intent": intent, "difficulty": round(hardness(text), 3), "risk": risk, "reasons": reasons}
    return json.dumps({**body, "confidence": confidence(strength, text)})


def _total(text: str, strength: float) -> str | None:
    lines = list(TOTAL_LINE.finditer(text))
    if not lines:
        return None
    if strength < 0.7:  # weak models take the first amount labelled anything like total
        return lines[0].group("amount").replace(",", "")
    grand = [m for m in lines if not re.search(r"sub", m.group("label"), re.I)]
    return (grand or lines)[-1].group("amount").replace(",", "")


def _extract(text: str, strength: float) -> str:
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


def _answer(text: str, strength: float) -> str:
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
