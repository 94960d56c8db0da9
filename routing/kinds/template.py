"""Templates over a job's payload: `{field}` names a top-level payload field.

A line of a template whose every field is absent (missing, null or empty) is left
out, so `"{subject}\\n{text}"` reads as the text alone when a ticket has no subject.
`{{` and `}}` are literal braces. Pure: the standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_fields(template: str) -> list[str]:
    """The payload fields a template names, in order, once each."""
    return list(dict.fromkeys(m.group(1) for m in FIELD.finditer(template) if m.group(1)))


def template_problem(template: str) -> str | None:
    """Why a template cannot be rendered (a stray brace), or None."""
    rest = FIELD.sub("", template)
    if "{" in rest or "}" in rest:
        return "a '{' or '}' that is not part of {field}; write {{ or }} for a literal brace"
    return None


def _value(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _absent(value: object) -> bool:
    return value is None or value == "" or value == [] or value == {}


def render(template: str, payload: Mapping[str, object]) -> str:
    """The template with each field's value; lines whose fields are all absent are dropped."""
    lines = []
    for line in template.split("\n"):
        names = [m.group(1) for m in FIELD.finditer(line) if m.group(1)]
        if names and all(_absent(payload.get(name)) for name in names):
            continue

        def fill(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return match.group(0)[0]
            value = payload.get(match.group(1))
            return "" if _absent(value) else _value(value)

        lines.append(FIELD.sub(fill, line))
    return "\n".join(lines)
