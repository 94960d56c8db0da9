"""Whether a job's output says what a gold label expects.

A gold label (`tierflow feedback --labels`) either says `correct` outright or gives
the `expected` output, which `matches_expected` compares with the job's result:
- a JSON object: every key it names must match the output's value under that key
  (for a document, the extracted `fields`), so a label may check one field or all;
- anything else: the output's answer text (`answer`, else `reply`). A number, or text
  that is one, matches the answer's final number (`#### 18`, "the answer is $18.00"
  and "18" all match 18); other text matches when equal to the whole answer or to
  its final part, ignoring case, spacing and the punctuation around it.

Pure: the standard library only (and `routing.answer_features`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from tierflow.routing.answer_features import final_number, final_text, parse_number

_SPACE = re.compile(r"\s+")
_EDGES = " \t\n.,;:!?\"'`*()[]{}"


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text.casefold()).strip(_EDGES)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return parse_number(value) if isinstance(value, str) else None


def same_answer(found: Any, expected: Any) -> bool:
    """Whether one output value says what the expected value says."""
    if found is None:
        return expected is None
    text = found if isinstance(found, str) else str(found)
    number = _as_number(expected)
    if number is not None:
        shown = final_number(text)
        return shown is not None and math.isclose(shown, number, rel_tol=1e-9, abs_tol=1e-9)
    wanted = _normal(str(expected))
    return wanted in {_normal(text), _normal(final_text(text))}


def matches_expected(output: Mapping[str, Any] | None, expected: Any) -> bool:
    """Whether a job's result `output` matches a gold label's `expected` (see the module doc)."""
    if output is None:
        return False
    if isinstance(expected, Mapping):
        fields = output.get("fields")
        target = fields if isinstance(fields, Mapping) and not set(expected) & set(output) else output
        return bool(expected) and all(
            key in target and same_answer(target[key], value) for key, value in expected.items()
        )
    for key in ("answer", "reply"):
        if isinstance(output.get(key), str):
            return same_answer(output[key], expected)
    return False
