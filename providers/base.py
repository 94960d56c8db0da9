"""The Provider protocol and the values that cross it.

A provider takes a CompletionRequest for one model and returns a Completion with
exact usage and cost, or raises a ProviderError subclass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class CompletionRequest:
    system: str
    user: str
    max_tokens: int = 400
    temperature: float = 0.0
    timeout_s: float = 30.0
    json_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    provider: str
    model: str
    request_id: str
    parsed: dict[str, Any] | None = None
    # Of input_tokens: those read from, and those written to, the provider's prompt cache.
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ModelRef:
    """`provider:model`, as tiers name their models in settings."""

    provider: str
    model: str

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        provider, sep, model = ref.partition(":")
        if not sep or not provider or not model:
            raise ValueError(f"model reference {ref!r} is not of the form provider:model")
        return cls(provider, model)

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


class Provider(Protocol):
    name: str

    def complete(self, model: str, request: CompletionRequest) -> Completion: ...


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object a model returned, or None: judging a bad output is the caller's job."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def field(body: object, name: str) -> object:
    """`body[name]` of a decoded JSON object, or None when `body` is not an object or lacks it."""
    return body.get(name) if isinstance(body, dict) else None


def count(body: object, name: str) -> int | None:
    """A token count `body[name]`: a non-negative int (not a bool), else None."""
    value = field(body, name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
