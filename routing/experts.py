"""What an expert is asked and what it answers, whatever its kind.

Pure. A model expert turns a job into a Prompt and the model's text back into an
ExpertOutput (its answer validated against a pydantic model, or a JSON Schema for
a declared kind); a rule expert computes its ExpertOutput directly. Which experts a
kind has lives in the kind seam (routing/kinds/); the tasks layer makes the calls
and stores what comes back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ExpertAnswer(BaseModel):
    """What every model expert answers: its output fields and its confidence."""

    model_config = ConfigDict(extra="forbid")

    confidence: float = Field(ge=0, le=1)


@dataclass(frozen=True)
class Prompt:
    """A model call: `schema` (a pydantic model) or `answer_schema` (a JSON Schema) is the answer's shape."""

    task: str
    system: str
    user: str
    schema: type[ExpertAnswer] | None = None
    max_tokens: int = 400
    answer_schema: dict[str, Any] | None = field(default=None, compare=False)

    def json_schema(self) -> dict[str, Any]:
        if self.schema is not None:
            return _model_schema(self.schema)
        assert self.answer_schema is not None, "a prompt has a schema or an answer_schema"
        return self.answer_schema

    def parse(self, text: str) -> ExpertOutput:
        if self.schema is not None:
            return parse_answer(self.schema, text)
        return parse_json_answer(self.json_schema(), text)


@dataclass(frozen=True)
class ExpertOutput:
    output: dict[str, Any]
    confidence: float


@dataclass(frozen=True)
class ExpertOutcome:
    """What the judge sees of one expert: its output, or the error it ended with."""

    name: str
    uses_model: bool
    output: dict[str, Any] | None
    confidence: float | None
    error: str | None = None


class UnparseableOutput(ValueError):
    """The model's text is not the JSON object its schema asks for."""


@cache
def _model_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema, built once per model (pydantic builds it again on every call);
    shared, so never changed by its readers."""
    return schema.model_json_schema()


def _json_object(text: str) -> str:
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        raise UnparseableOutput("no JSON object in the answer")
    return match.group(0)


def parse_answer(schema: type[ExpertAnswer], text: str) -> ExpertOutput:
    """Validate a model's text against the expert's schema; UnparseableOutput says what is wrong."""
    body = _json_object(text)
    try:
        answer = schema.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '<object>'}: {error['msg']}"
            for error in exc.errors()
        )
        raise UnparseableOutput(problems) from None
    output = answer.model_dump(mode="json", exclude={"confidence"})
    return ExpertOutput(output=output, confidence=answer.confidence)


def parse_json_answer(schema: dict[str, Any], text: str) -> ExpertOutput:
    """Validate a model's text against a JSON Schema whose object carries a `confidence`."""
    try:
        answer = json.loads(_json_object(text))
    except json.JSONDecodeError as exc:
        raise UnparseableOutput(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    problems = sorted(jsonschema.Draft202012Validator(schema).iter_errors(answer), key=lambda e: e.path)
    if problems:
        raise UnparseableOutput(
            "; ".join(f"{'.'.join(str(p) for p in e.path) or '<object>'}: {e.message}" for e in problems)
        )
    confidence = float(answer.pop("confidence"))
    return ExpertOutput(output=answer, confidence=confidence)


def answer_schema(fields: dict[str, Any]) -> dict[str, Any]:
    """A declared answer schema with the `confidence` every expert gives, closed to other keys."""
    properties = dict(fields.get("properties", {}))
    properties["confidence"] = {"type": "number", "minimum": 0, "maximum": 1}
    required = [*fields.get("required", []), "confidence"]
    return {
        **fields,
        "type": "object",
        "properties": properties,
        "required": list(dict.fromkeys(required)),
        "additionalProperties": False,
    }


def system_prompt(task: str, instruction: str, keys: list[str]) -> str:
    """The system message of an expert: its task, its instruction, the keys of its answer."""
    named = ", ".join(f'"{name}"' for name in keys)
    return (
        f"Task: {task}\n{instruction}\n"
        f"Answer with one JSON object with the keys {named}; "
        "confidence is your probability, between 0 and 1, that the answer is right."
    )
