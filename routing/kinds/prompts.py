"""The prompt a model expert of a kind sends: a Python plug-in's own, or one built from the kind's
declaration (its instruction, its prompt template over the payload, its answer JSON Schema).

A declared expert's system message carries its answer schema after SCHEMA_MARKER,
so any model (and tierflow's offline answerers) can see the shape it must answer in.
Pure: routing/ only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tierflow.routing.experts import Prompt, answer_schema
from tierflow.routing.kinds.spec import ExpertSpec, KindSpec
from tierflow.routing.kinds.template import render

SCHEMA_MARKER = "Answer schema (JSON Schema):"


def declared_task(kind: KindSpec, expert: ExpertSpec) -> str:
    return expert.task or f"{kind.name}.{expert.name}"


def declared_system(kind: KindSpec, expert: ExpertSpec, context: Mapping[str, Any]) -> str:
    schema = answer_schema(expert.answer_schema or {})
    instruction = expert.instruction or f"Work on this {kind.name} job: {kind.description}".strip()
    if context.get("instruction"):
        instruction += f"\n{context['instruction']}"
    articles = context.get("articles") or []
    if articles:
        notes = "\n".join(f"- {a['title']}: {a['snippet']}" for a in articles)
        instruction += f"\nUse these knowledge articles where they apply:\n{notes}"
    keys = ", ".join(f'"{name}"' for name in schema["properties"])
    return (
        f"Task: {declared_task(kind, expert)}\n{instruction}\n"
        f"Answer with one JSON object with the keys {keys}; "
        "confidence is your probability, between 0 and 1, that the answer is right.\n"
        f"{SCHEMA_MARKER}\n{json.dumps(schema, sort_keys=True)}"
    )


def expert_prompt(
    kind: KindSpec, expert: ExpertSpec, payload: dict[str, Any], context: Mapping[str, Any]
) -> Prompt:
    """The Prompt of a model expert for this payload; `context` holds "articles" when it is grounded
    and "instruction" when the job's specialist adds one to the expert's own."""
    if expert.build is not None:
        return expert.build(payload, context)
    assert expert.prompt is not None, "a declared model expert has a prompt template"
    return Prompt(
        task=declared_task(kind, expert),
        system=declared_system(kind, expert, context),
        user=render(expert.prompt, payload),
        max_tokens=expert.max_tokens,
        answer_schema=answer_schema(expert.answer_schema or {}),
    )
