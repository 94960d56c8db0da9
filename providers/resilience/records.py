"""The record of one model call, and what its outcome tells the circuit breaker.

Owns `CallOutcome`, `CallRecord` (what the store keeps of every call: model,
attempt, outcome, tokens, cost, latency) and `breaker_signal`, the one place
that decides which failures count against a model:

    ok                         -> a success
    timeout, unavailable,      -> a failure: the model (or its host) is not answering well
    error (any other)
    rate_limited (HTTP 429)    -> neither: the model works, our quota is spent; Retry-After
                                  and the cluster rate limit deal with it, and a cooldown
                                  that ignores Retry-After would keep it out too long
    rejected (bad request,     -> neither: the request, not the model, is at fault; a model
    refusal, invalid output)      must not be cut off because one job is malformed

Records hold only the redacted reasons the adapters put in their errors, never
a key. Imports no SDK and no service client.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from tierflow.providers.base import Completion
from tierflow.routing.errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)


class CallOutcome(str, Enum):
    OK = "ok"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    REJECTED = "rejected"
    ERROR = "error"


def outcome_of(error: ProviderError) -> CallOutcome:
    if isinstance(error, ProviderTimeout):
        return CallOutcome.TIMEOUT
    if isinstance(error, ProviderUnavailable):
        return CallOutcome.UNAVAILABLE
    if isinstance(error, ProviderRateLimited):
        return CallOutcome.RATE_LIMITED
    if isinstance(error, ProviderRejected):
        return CallOutcome.REJECTED
    return CallOutcome.ERROR


def breaker_signal(outcome: CallOutcome) -> bool | None:
    """True: a success for the breaker; False: a failure; None: says nothing about the model."""
    if outcome is CallOutcome.OK:
        return True
    if outcome in (CallOutcome.RATE_LIMITED, CallOutcome.REJECTED):
        return None
    return False


@dataclass(frozen=True)
class CallRecord:
    """One HTTP call to one model, as the store records it.

    Attributes:
        model: "provider:model".
        attempt: the attempt number on this model within one tier call (1 = first try).
        outcome: how it ended.
        input_tokens, output_tokens, cost_usd: the provider's usage and its price (zero
            for failed calls, which report no usage).
        latency_s: wall time of the call.
        request_id: the provider's request id ("" when it failed).
        error: the error's (redacted) reason, None on success.
        retry_after: the provider's Retry-After in seconds, when it gave one.
    """

    model: str
    attempt: int
    outcome: CallOutcome
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    request_id: str = ""
    error: str | None = None
    retry_after: float | None = None

    @classmethod
    def succeeded(cls, model: str, attempt: int, completion: Completion) -> CallRecord:
        return cls(
            model=model,
            attempt=attempt,
            outcome=CallOutcome.OK,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cost_usd=completion.cost_usd,
            latency_s=completion.latency_s,
            request_id=completion.request_id,
        )

    @classmethod
    def failed(cls, model: str, attempt: int, error: ProviderError, latency_s: float) -> CallRecord:
        return cls(
            model=model,
            attempt=attempt,
            outcome=outcome_of(error),
            input_tokens=0,
            output_tokens=0,
            cost_usd=0.0,
            latency_s=latency_s,
            error=error.reason,
            retry_after=error.retry_after,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the `calls` column of an expert result)."""
        return {**asdict(self), "outcome": self.outcome.value, "latency_s": round(self.latency_s, 6)}
