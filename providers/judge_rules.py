"""The offline judge: a deterministic grade for tierflow's judge prompt (routing/judging.py).

No model grades anything here. With a reference text (the local provider server passes
the judge model's recorded response to the same job, from its replay book) the grade is
a reference match: the answers' final numbers (after "####", else the last number
written) agree or not, and for texts without numbers the share of the reference's words
the answer contains. Without a reference, an arithmetic job is recomputed; anything else
gets a middling score that only reflects how hard the job's text looks. Every reason
starts with "offline:", so no one mistakes these grades for a model's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from tierflow.routing.judging import SCORE_HIGH, SCORE_LOW, read_judge_request

LABEL = "offline:"
FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([+\-*/x×])\s*(-?\d+(?:\.\d+)?)")
WORD = re.compile(r"[a-z0-9]+")


def final_number(text: str) -> str | None:
    """The answer's final number, normalised (no thousands separators, no trailing ".0")."""
    marked = FINAL.search(text)
    found = marked.group(1) if marked else (NUMBER.findall(text) or [None])[-1]
    if found is None:
        return None
    value = found.replace(",", "")
    try:
        number = float(value)
    except ValueError:
        return None
    return f"{number:.6f}".rstrip("0").rstrip(".")


def _grade(score: int, reason: str, confidence: float) -> str:
    score = min(SCORE_HIGH, max(SCORE_LOW, score))
    return json.dumps({"score": score, "reason": f"{LABEL} {reason}", "confidence": confidence})


def _against_reference(answer: str, reference: str) -> str:
    mine, theirs = final_number(answer), final_number(reference)
    if mine is not None and theirs is not None:
        if mine == theirs:
            return _grade(9, f"final number {mine} matches the reference's", 0.9)
        return _grade(2, f"final number {mine} differs from the reference's {theirs}", 0.85)
    words = set(WORD.findall(reference.lower()))
    overlap = len(words & set(WORD.findall(answer.lower()))) / len(words) if words else 0.0
    return _grade(
        round(SCORE_LOW + (SCORE_HIGH - SCORE_LOW) * overlap),
        f"{overlap:.0%} of the reference's words",
        0.5,
    )


def _recomputed(job: str, answer: str) -> str | None:
    match = ARITHMETIC.search(job)
    if match is None:
        return None
    left, op, right = float(match.group(1)), match.group(2), float(match.group(3))
    if op == "/" and right == 0:
        return None
    value = {"+": left + right, "-": left - right, "/": left / right if right else 0.0}.get(op, left * right)
    expected = f"{value:.6f}".rstrip("0").rstrip(".")
    if final_number(answer) == expected:
        return _grade(10, f"recomputed {match.group(0)} = {expected}: the answer agrees", 0.95)
    return _grade(1, f"recomputed {match.group(0)} = {expected}: the answer does not", 0.95)


def offline_grade(user: str, hardness: Callable[[str], float], reference: str | None) -> str:
    """The offline judge's JSON answer to a judge prompt's user message.

    Args:
        user: the judge prompt's user message (the job and the answer, as JSON).
        hardness: how hard a text looks, in [0, 1] (providers.rules.hardness).
        reference: the judge model's recorded response to the job, when there is one.
    """
    request = read_judge_request(user)
    if request is None:
        return _grade(SCORE_LOW, "the request names no job and answer", 0.05)
    job, answer = request
    if not answer.strip():
        return _grade(SCORE_LOW, "the answer is empty", 0.9)
    if reference is not None:
        return _against_reference(answer, reference)
    recomputed = _recomputed(job, answer)
    if recomputed is not None:
        return recomputed
    hard = hardness(job)
    score = round(SCORE_HIGH - (SCORE_HIGH - SCORE_LOW) * hard / 2)
    return _grade(score, f"nothing to check the answer against; the job's hardness is {hard:.2f}", 0.3)
