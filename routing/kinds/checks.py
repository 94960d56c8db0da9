"""The acceptance checks a kind can name: each reads an attempt's outputs and lists its problems.

A check returns Problems; the verdict (routing/verdict.py) applies the check's
`on_fail` to them: escalate, hold for review, lower the quality by a penalty, or
scale it. Python plug-ins add checks to a registry's library under new names.

Pure: the standard library and jsonschema only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema

from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.kinds.spec import CheckSpec, ExpertType, KindSpec


@dataclass(frozen=True)
class Problem:
    reason: str
    penalty: float | None = None  # None: the check's own penalty


@dataclass(frozen=True)
class CheckInput:
    """One attempt as a check sees it: the kind, each expert's outcome, the merged answer."""

    kind: KindSpec
    outcomes: Mapping[str, ExpertOutcome]
    answer: Mapping[str, Any]
    quality: float


Check = Callable[[CheckSpec, CheckInput], list[Problem]]


def _sources(spec: CheckSpec, seen: CheckInput) -> list[tuple[str, Mapping[str, Any]]]:
    """(where, output) pairs a check reads: the named experts that answered, or the merged answer."""
    if not spec.experts:
        return [("answer", seen.answer)]
    found = [(name, seen.outcomes[name].output) for name in spec.experts if name in seen.outcomes]
    return [(name, output) for name, output in found if output is not None]


def _get(output: Mapping[str, Any], path: str) -> Any:
    value: Any = output
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def check_schema(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """Every answering model expert's output validates against its answer schema."""
    problems = []
    for expert in seen.kind.experts:
        outcome = seen.outcomes.get(expert.name)
        if expert.answer_schema is None or outcome is None or outcome.output is None:
            continue
        body = {**outcome.output, "confidence": outcome.confidence or 0.0}
        for error in jsonschema.Draft202012Validator(expert.answer_schema).iter_errors(body):
            where = ".".join(str(p) for p in error.path) or "<object>"
            problems.append(Problem(f"{expert.name} answer {where}: {error.message}"))
    return problems


def check_required(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """The named fields are present and non-empty."""
    return [
        Problem(f"{field} is missing" + ("" if where == "answer" else f" from {where}"))
        for where, output in _sources(spec, seen)
        for field in spec.fields
        if _empty(_get(output, field))
    ]


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", "").strip())
        except ValueError:
            return None
    return None


def _normal(value: object) -> str:
    return " ".join(str(value).lower().strip().rstrip(".!").split())


def _same(a: object, b: object, tolerance: float) -> bool:
    both_numbers = isinstance(a, int | float) and isinstance(b, int | float)
    if both_numbers or tolerance > 0:
        x, y = _number(a), _number(b)
        if x is not None and y is not None:
            return abs(x - y) <= tolerance
    return _normal(a) == _normal(b)


def check_agree(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """The named fields have the same value in every named expert's output (numbers within tolerance)."""
    sources = [(name, output) for name, output in _sources(spec, seen) if name != "answer" and output]
    if len(sources) < 2:
        return []
    (first, base), problems = sources[0], []
    for other, output in sources[1:]:
        for field in spec.fields:
            a, b = _get(base, field), _get(output, field)
            if not _same(a, b, spec.tolerance):
                on = "" if len(spec.fields) == 1 else f" on {field}"
                problems.append(Problem(f"{first} and {other} disagree{on}: {a!r} vs {b!r}"))
    return problems


def check_one_of(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """The named fields' values are among `values`."""
    return [
        Problem(f"{field} is {_get(output, field)!r}, not one of {', '.join(spec.values)}")
        for _, output in _sources(spec, seen)
        for field in spec.fields
        if str(_get(output, field)) not in spec.values
    ]


def check_pattern(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """The named fields' values match `pattern` (the whole value)."""
    compiled = re.compile(spec.pattern or "")
    return [
        Problem(f"{field} {_get(output, field)!r} does not match {spec.pattern}")
        for _, output in _sources(spec, seen)
        for field in spec.fields
        if not isinstance(_get(output, field), str) or compiled.fullmatch(_get(output, field)) is None
    ]


def check_reconcile(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """The `items` amounts plus `tax` equal `total`, within the tolerance (a cent by default)."""
    tolerance = spec.tolerance or 0.01
    problems = []
    for _, output in _sources(spec, seen):
        items = _get(output, spec.items or "items")
        amounts = [_number(item) for item in items] if isinstance(items, list) else []
        tax = _number(_get(output, spec.tax)) if spec.tax else 0.0
        total = _number(_get(output, spec.total or "total"))
        if total is None or tax is None or None in amounts:
            problems.append(Problem("amounts to reconcile are missing or not numbers"))
            continue
        counted = sum(a for a in amounts if a is not None) + tax
        if abs(counted - total) > tolerance:
            problems.append(Problem(f"items plus tax are {counted:.2f}, the total is {total:.2f}"))
    return problems


DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d %B %Y", "%B %d, %Y", "%d %b %Y")


def parses_as_date(value: object) -> bool:
    if not isinstance(value, str):
        return False
    for pattern in DATE_FORMATS:
        try:
            datetime.strptime(value.strip(), pattern)
        except ValueError:
            continue
        return True
    return False


def check_date(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """The named fields (or each item of a list field) parse as dates."""
    problems = []
    for _, output in _sources(spec, seen):
        for field in spec.fields:
            value = _get(output, field)
            values = value if isinstance(value, list) else [value]
            problems += [Problem(f"{field} {v!r} is not a date") for v in values if not parses_as_date(v)]
    return problems


def check_confidence(spec: CheckSpec, seen: CheckInput) -> list[Problem]:
    """Every model expert is at least `threshold` sure."""
    threshold = spec.threshold if spec.threshold is not None else 0.5
    return [
        Problem(f"{name} is only {outcome.confidence:.2f} sure, below {threshold:.2f}")
        for name, outcome in seen.outcomes.items()
        if outcome.uses_model and outcome.confidence is not None and outcome.confidence < threshold
    ]


CHECKS: dict[str, Check] = {
    "schema": check_schema,
    "required": check_required,
    "agree": check_agree,
    "one_of": check_one_of,
    "pattern": check_pattern,
    "reconcile": check_reconcile,
    "date": check_date,
    "confidence": check_confidence,
}


def model_experts(kind: KindSpec) -> list[str]:
    return [expert.name for expert in kind.experts if expert.type is ExpertType.MODEL]
