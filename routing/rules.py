"""Declarative routing rules from the policy: the analysis' first stage, before any model.

Pure. A rule matches on a job's kind, metadata, a regular expression, a keyword
set and its length in tokens; the first rule that matches decides the analysis
fields it names, with its stated confidence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RoutingRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    # when it matches: every condition given must hold
    kinds: tuple[str, ...] = ()  # kind names
    pattern: str | None = None  # a regular expression searched in the job's text, case-insensitive
    keywords: tuple[str, ...] = ()  # any of these whole words
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    metadata: dict[str, str | int | float] = Field(default_factory=dict)  # equal values
    # what it decides
    intent: str | None = None
    difficulty: float | None = Field(default=None, ge=0, le=1)
    risk: float | None = Field(default=None, ge=0, le=1)
    confidence: float = Field(default=0.9, ge=0, le=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        return value


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _keyword_hit(rule: RoutingRule, text: str) -> bool:
    if not rule.keywords:
        return True
    words = set(re.findall(r"\w+", text.lower()))
    return any(
        keyword.lower() in words if " " not in keyword else keyword.lower() in text.lower()
        for keyword in rule.keywords
    )


def matches(rule: RoutingRule, kind: str, text: str, tokens: int, metadata: Mapping[str, object]) -> bool:
    """True when every condition the rule gives holds for the job."""
    if rule.kinds and kind not in rule.kinds:
        return False
    if rule.min_tokens is not None and tokens < rule.min_tokens:
        return False
    if rule.max_tokens is not None and tokens > rule.max_tokens:
        return False
    if any(metadata.get(key) != value for key, value in rule.metadata.items()):
        return False
    if rule.pattern is not None and not _compiled(rule.pattern).search(text):
        return False
    return _keyword_hit(rule, text)


def first_match(
    rules: Sequence[RoutingRule], kind: str, text: str, tokens: int, metadata: Mapping[str, object]
) -> RoutingRule | None:
    return next((rule for rule in rules if matches(rule, kind, text, tokens, metadata)), None)


def approximate_tokens(text: str) -> int:
    """About four characters a token, when the caller has no tokenizer's count."""
    return max(1, (len(text) + 3) // 4)
