"""What a cheaper model's answer says about whether it is right, for cascade scoring.

Owns `ANSWER_FEATURES` and `answer_features(prompt, answer)`: cheap, generic
signals of an answer given its prompt, in the spirit of FrugalGPT's answer
scorer. Its length and shape, whether it states a final answer, hedging words,
whether the arithmetic it shows (`3 x 60 = 180`, `<<3*60=180>>`) is actually
right, how many of the prompt's numbers it uses, what its final number looks like,
repetition and truncation. Nothing here depends on a dataset's ids, categories or
values.

Pure: the standard library and numpy only. Must not import the store, the tasks,
providers or the worker.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

ANSWER_FEATURES: tuple[str, ...] = (
    "log_chars",
    "log_lines",
    "length_vs_prompt",
    "states_final",
    "final_marker_at_end",
    "hedges",
    "refuses",
    "equations",
    "wrong_equations",
    "wrong_share",
    "calculator_mismatch",
    "prompt_numbers_used",
    "new_numbers",
    "has_final_number",
    "final_is_integer",
    "final_is_negative",
    "final_in_prompt",
    "final_matches_last_result",
    "final_log_magnitude",
    "distinct_final_candidates",
    "truncated",
    "repeated_lines",
    "unique_word_share",
    "option_letters",
)

NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
FINAL_MARKER = re.compile(
    r"####|\\boxed|answer is|answer:|final answer|therefore|in total|in conclusion|the result is",
    re.IGNORECASE,
)
HEDGE = re.compile(
    r"\b(?:maybe|perhaps|might|possibly|probably|approximately|roughly|assum\w*|unclear|not sure"
    r"|uncertain|ambiguous|it seems|however|I think|I believe|guess|estimate)\b",
    re.IGNORECASE,
)
REFUSAL = re.compile(
    r"\b(?:cannot be determined|not enough information|insufficient information|I'm sorry|I am sorry"
    r"|I cannot|I can't|unable to|no correct answer|none of the)\b",
    re.IGNORECASE,
)
# an expression of at least two numbers joined by operators, then "=" and a number
EQUATION = re.compile(
    r"((?:\(?\s*-?\$?\d[\d,]*(?:\.\d+)?\s*\)?\s*[-+*/x×÷]\s*)+\(?\s*\$?\d[\d,]*(?:\.\d+)?\s*\)?)"
    r"\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)(?![\d,.]*\s*[-+*/x×÷(]\s*\$?\d)"
)
CALCULATOR = re.compile(r"<<([^<>=]+)=([^<>]+)>>\s*\$?(-?\d[\d,]*(?:\.\d+)?)?")
CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")  # checked on its own by calculator_mismatches
OPTION_CHOICE = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-H])\)?(?![\w])", re.IGNORECASE)

_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def parse_number(text: str) -> float | None:
    """A number written with thousands commas or a dollar sign ("$1,250.00"); None if it is none."""
    try:
        return float(text.strip().replace(",", "").replace("$", ""))
    except ValueError:
        return None


def evaluate_arithmetic(expression: str) -> float | None:
    """The value of `+ - * / ( )` arithmetic on plain numbers (x and × multiply); None otherwise."""
    cleaned = re.sub(r"(?<=[\d)\s])[x×](?=[\s\d(])", "*", expression).replace("÷", "/")
    cleaned = re.sub(r"(?<=\d),(?=\d{3})", "", cleaned.replace("$", ""))
    try:
        tree = ast.parse(cleaned.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    return _evaluate(tree.body)


def _evaluate(node: ast.expr) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _evaluate(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
            return None
        return _OPERATORS[type(node.op)](left, right)
    return None


def _close(claimed: float, actual: float) -> bool:
    """Equal up to the rounding a worked answer may show (two decimals, or 1%)."""
    return abs(claimed - actual) <= max(0.01, 0.01 * abs(actual))


def checked_equations(answer: str) -> tuple[int, int, list[float]]:
    """How many shown equations could be checked, how many are wrong, and their results in order."""
    checked, wrong, results = 0, 0, []
    for match in EQUATION.finditer(CALCULATOR_NOTE.sub("", answer)):
        actual, claimed = evaluate_arithmetic(match.group(1)), parse_number(match.group(2))
        if actual is None or claimed is None:
            continue
        checked += 1
        wrong += not _close(claimed, actual)
        results.append(claimed)
    return checked, wrong, results


def calculator_mismatches(answer: str) -> int:
    """`<<a*b=c>>d` annotations whose c is not a*b, or whose d (the text after) is not c."""
    mismatches = 0
    for match in CALCULATOR.finditer(answer):
        actual, claimed = evaluate_arithmetic(match.group(1)), parse_number(match.group(2))
        shown = parse_number(match.group(3)) if match.group(3) else claimed
        if claimed is None or (actual is not None and not _close(claimed, actual)) or shown != claimed:
            mismatches += 1
    return mismatches


def _numbers(text: str) -> list[float]:
    return [value for value in (parse_number(token) for token in NUMBER.findall(text)) if value is not None]


def final_number(answer: str) -> float | None:
    """The answer's final number: the last number after its last final-answer marker, else the
    last number it shows; None when it shows none."""
    numbers = _numbers(final_text(answer)) or _numbers(answer)[-1:]
    return numbers[-1] if numbers else None


def final_text(answer: str) -> str:
    """The part after the last final-answer marker, else the last non-empty line."""
    markers = list(FINAL_MARKER.finditer(answer))
    if markers:
        return answer[markers[-1].end() :]
    lines = [line for line in answer.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _truncated(answer: str) -> bool:
    stripped = answer.rstrip()
    if not stripped:
        return True
    unbalanced = stripped.count("<<") != stripped.count(">>") or stripped.count("(") > stripped.count(")")
    return unbalanced or stripped[-1] in ",=+-*/(<:"


def _shape(prompt: str, answer: str) -> list[float]:
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    markers = list(FINAL_MARKER.finditer(answer))
    return [
        math.log1p(len(answer)),
        math.log1p(len(lines)),
        math.log1p(len(answer)) - math.log1p(len(prompt)),
        float(bool(markers)),
        float(bool(markers) and markers[-1].start() >= 0.7 * len(answer)),
        math.log1p(len(HEDGE.findall(answer))),
        float(bool(REFUSAL.search(answer))),
    ]


def _arithmetic(answer: str) -> list[float]:
    checked, wrong, _ = checked_equations(answer)
    return [
        math.log1p(checked),
        float(wrong),
        wrong / checked if checked else 0.0,
        float(calculator_mismatches(answer)),
    ]


def _final_number(prompt: str, answer: str) -> list[float]:
    prompt_numbers, answer_numbers = set(_numbers(prompt)), _numbers(answer)
    final_numbers = _numbers(final_text(answer)) or answer_numbers[-1:]
    _, _, results = checked_equations(answer)
    used = len(prompt_numbers & set(answer_numbers)) / len(prompt_numbers) if prompt_numbers else 1.0
    new = len(set(answer_numbers) - prompt_numbers)
    if not final_numbers:
        return [used, math.log1p(new), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    final = final_numbers[-1]
    return [
        used,
        math.log1p(new),
        1.0,
        float(final == round(final)),
        float(final < 0),
        float(final in prompt_numbers),
        float(bool(results) and _close(final, results[-1])),
        math.log1p(min(abs(final), 1e12)),
        math.log1p(len(set(final_numbers))),
    ]


def _repetition(answer: str) -> list[float]:
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    words = answer.lower().split()
    letters = {match.upper() for match in OPTION_CHOICE.findall(answer)}
    return [
        float(_truncated(answer)),
        (len(lines) - len(set(lines))) / len(lines) if lines else 0.0,
        len(set(words)) / len(words) if words else 0.0,
        float(len(letters)),
    ]


def answer_features(prompt: str, answer: str) -> NDArray[np.float64]:
    """The features of `answer` to `prompt`, in ANSWER_FEATURES order."""
    values = [
        *_shape(prompt, answer),
        *_arithmetic(answer),
        *_final_number(prompt, answer),
        *_repetition(answer),
    ]
    return np.array(values, dtype=np.float64)


def answer_feature_matrix(prompts: list[str], answers: list[str]) -> NDArray[np.float64]:
    """One row of `answer_features` per (prompt, answer) pair."""
    rows = [answer_features(prompt, answer) for prompt, answer in zip(prompts, answers, strict=True)]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(ANSWER_FEATURES))
