"""Injected faults and latency of the local provider server.

Owns the fault plan (which requests fail, and how) and the latency plan (how long
an answer takes). Both are plain data that can be replaced while the server runs
(`POST /_control/faults`, `POST /_control/latency`); drawing from them is
thread-safe and seeded, so a sequential test sees the same faults every run.
Must not import the SDKs or anything of the HTTP layer.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Fault(StrEnum):
    """What an injected fault does to one request."""

    RATE_LIMIT = "rate_limit"  # 429 with a Retry-After header
    SERVER_ERROR = "server_error"  # 500
    UNAVAILABLE = "unavailable"  # 503, Retry-After when the rule gives one
    TIMEOUT = "timeout"  # no answer until long after the client has given up
    MALFORMED = "malformed"  # 200 with a truncated JSON body
    INVALID_SHAPE = "invalid_shape"  # 200 with valid JSON that is not a completion
    DISCONNECT = "disconnect"  # the connection is closed without any response


class FaultRule(BaseModel):
    """One fault and when it fires.

    A rule matches the requests for `model` (every model when None). Of the matching
    requests it fires on every `every`-th one (1 = all), or on each with probability
    `probability`, or on all of them when neither is given; at most `limit` times.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fault: Fault
    model: str | None = None
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    every: int | None = Field(default=None, ge=1)
    limit: int | None = Field(default=None, ge=0)
    retry_after_s: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _one_trigger(self) -> FaultRule:
        if self.probability is not None and self.every is not None:
            raise ValueError("give either probability or every, not both")
        return self

    def matches(self, model: str) -> bool:
        return self.model is None or self.model == model


class FaultPlanSpec(BaseModel):
    """The JSON body of `POST /_control/faults`: the rules, first firing rule wins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: list[FaultRule] = Field(default_factory=list)


class FaultPlan:
    """The live fault rules with their counters; replaced whole, drawn per request."""

    def __init__(self, rules: Sequence[FaultRule] = (), seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._seen: list[int] = []
        self._fired: list[int] = []
        self.replace(rules)

    def replace(self, rules: Sequence[FaultRule]) -> None:
        """Installs new rules and starts their counters from zero."""
        with self._lock:
            self._rules = list(rules)
            self._seen = [0] * len(self._rules)
            self._fired = [0] * len(self._rules)

    def draw(self, model: str) -> FaultRule | None:
        """The rule that fires for this request, if any.

        Every matching rule counts the request, so `every` stays exact when rules overlap.
        """
        chosen: FaultRule | None = None
        with self._lock:
            for index, rule in enumerate(self._rules):
                if not rule.matches(model):
                    continue
                self._seen[index] += 1
                if chosen is None and self._fires(index, rule):
                    self._fired[index] += 1
                    chosen = rule
        return chosen

    def _fires(self, index: int, rule: FaultRule) -> bool:
        if rule.limit is not None and self._fired[index] >= rule.limit:
            return False
        if rule.every is not None:
            return self._seen[index] % rule.every == 0
        if rule.probability is not None:
            return self._rng.random() < rule.probability
        return True

    def snapshot(self) -> list[dict[str, object]]:
        """The rules with how many requests each has seen and fired on."""
        with self._lock:
            return [
                {**rule.model_dump(mode="json"), "seen": seen, "fired": fired}
                for rule, seen, fired in zip(self._rules, self._seen, self._fired, strict=True)
            ]


class Latency(BaseModel):
    """A fixed delay plus a uniformly drawn jitter, in milliseconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_ms: float = Field(default=0.0, ge=0.0)
    jitter_ms: float = Field(default=0.0, ge=0.0)


class LatencySpec(BaseModel):
    """The JSON body of `POST /_control/latency`: a default and per-model overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: Latency = Field(default_factory=Latency)
    models: dict[str, Latency] = Field(default_factory=dict)


class LatencyPlan:
    """Seeded draws of the delay before each answer."""

    def __init__(self, spec: LatencySpec | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._spec = spec or LatencySpec()

    def replace(self, spec: LatencySpec) -> None:
        with self._lock:
            self._spec = spec

    def spec(self) -> LatencySpec:
        with self._lock:
            return self._spec

    def draw_s(self, model: str) -> float:
        """Seconds to wait before answering a request for `model`."""
        with self._lock:
            latency = self._spec.models.get(model, self._spec.default)
            jitter = self._rng.uniform(0.0, latency.jitter_ms) if latency.jitter_ms else 0.0
        return (latency.base_ms + jitter) / 1000.0
