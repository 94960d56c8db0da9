"""Calling a tier: its models in order, each behind its breaker, rate limit and retry policy.

Owns `TierCaller`, the whole resilience path of one completion:

    for each model of the tier, in order:
        breaker open                 -> skip to the next model
        cluster rate limit used up   -> remember its retry_after, skip to the next model
        call, retried as RetryPolicy allows (each attempt re-checks breaker and limit,
        and its outcome goes to the breaker and to `on_call`)
            success                  -> return it
            ProviderRejected         -> raise it: the request is at fault, and another
                                        model would be paid to refuse it again (a wrong key
                                        or model name must fail loudly, not shift every
                                        call and its cost silently to the fallback)
            anything else            -> the next model
    no model answered:
        every one only rate limited  -> ProviderRateLimited("tier", <tier>, retry_after=the
                                        smallest known wait): the task retries with a countdown
        otherwise                    -> TierUnavailable("tier", <tier>, "<ref>: <why>; ..."):
                                        the router picks another tier

Without breakers and limits (None: the embedded mode, one process and no Redis)
the same path runs with retries and fallback only. Imports no SDK and no Celery;
the store hears of every call through `on_call`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from tierflow.providers.base import Completion, CompletionRequest, ModelRef, Provider
from tierflow.providers.resilience.ratelimit import estimate_tokens
from tierflow.providers.resilience.records import CallRecord, breaker_signal, outcome_of
from tierflow.providers.retry import RetryPolicy, call_with_retries
from tierflow.providers.tracing import call_span
from tierflow.routing.errors import (
    ConfigError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    TierUnavailable,
)

log = logging.getLogger(__name__)

CallSink = Callable[[CallRecord], None]


class OutCause(str, Enum):
    """Why a model of the tier gave no answer."""

    BREAKER_OPEN = "breaker_open"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class _ModelOut:
    model: str
    cause: OutCause
    detail: str
    retry_after: float | None = None


class _Skip(Exception):
    """Leaves a model before a call is made; not a ProviderError, so the retry loop lets it through."""

    def __init__(self, cause: OutCause, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.cause, self.detail, self.retry_after = cause, detail, retry_after


class BreakerGuard(Protocol):
    """What TierCaller asks of breakers: Breakers (Redis), LocalBreakers, FallbackBreakers."""

    def allow(self, model_ref: str) -> bool: ...
    def record(self, model_ref: str, ok: bool) -> object: ...
    def release(self, model_ref: str) -> None: ...


class LimitGuard(Protocol):
    """What TierCaller asks of rate limits: RateLimits (Redis), LocalRateLimits, FallbackRateLimits."""

    def acquire(self, model_ref: str, tokens_estimate: int = 0) -> None: ...
    def settle(self, model_ref: str, tokens_estimate: int, tokens_used: int) -> None: ...


class _Unguarded:
    """No breaker and no limit: the embedded mode, one process and no Redis."""

    def allow(self, model_ref: str) -> bool:
        return True

    def record(self, model_ref: str, ok: bool) -> None:
        return None

    def release(self, model_ref: str) -> None:
        return None

    def acquire(self, model_ref: str, tokens_estimate: int = 0) -> None:
        return None

    def settle(self, model_ref: str, tokens_estimate: int, tokens_used: int) -> None:
        return None


UNGUARDED = _Unguarded()


@dataclass
class _ModelTry:
    """The attempts at one model within one tier call."""

    ref: str
    model: ModelRef
    provider: Provider
    request: CompletionRequest
    on_call: CallSink | None
    attempts: int = 0
    last_error: ProviderError | None = None

    def after(self, why: str) -> str:
        """`why`, following the last failure when there was one."""
        if self.last_error is None:
            return why
        return f"{outcome_of(self.last_error).value}: {self.last_error.reason}; then {why}"


class TierCaller:
    """Completes a request with the first model of a tier that can answer.

    Thread-safe: one caller serves all the threads of a worker.

    Args:
        providers: provider name -> Provider (the "openai" of "openai:gpt-4o").
        breakers: the circuit breakers (the cluster's, or this process's); None for none
            (embedded mode: no Redis).
        limits: the rate limits (likewise); None for none.
        retry: how each model's call is retried.
        sleep, draw, clock: time.sleep, random.random and time.monotonic; replaceable in tests.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        breakers: BreakerGuard | None,
        limits: LimitGuard | None,
        retry: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = dict(providers)
        self._breakers: BreakerGuard = breakers if breakers is not None else UNGUARDED
        self._limits: LimitGuard = limits if limits is not None else UNGUARDED
        self._retry = retry
        self._sleep, self._draw, self._clock = sleep, draw, clock

    def __repr__(self) -> str:
        return f"TierCaller(providers={sorted(self._providers)}, retry={self._retry})"

    def complete(
        self,
        models: Sequence[str],
        request: CompletionRequest,
        *,
        tier: str | None = None,
        on_call: CallSink | None = None,
        deadline_s: float | None = None,
    ) -> Completion:
        """The first answer of `models`, tried in order.

        Args:
            models: the tier's "provider:model" references, preferred first.
            request: what to ask.
            tier: the tier's name, for errors and logs (default: the references joined by "+").
            on_call: told of every call made, failed ones included, as it ends.
            deadline_s: seconds from now after which no further call or retry starts.

        Raises:
            ProviderRejected: a model refused the request itself.
            ProviderRateLimited: every model is rate limited; retry_after is the smallest wait.
            TierUnavailable: no model answered; the reason lists each model's cause.
        """
        name = tier or "+".join(models)
        started = self._clock()
        outs: list[_ModelOut] = []
        for ref in models:
            remaining = None if deadline_s is None else deadline_s - (self._clock() - started)
            if remaining is not None and remaining <= 0:
                outs.append(_ModelOut(ref, OutCause.DEADLINE, "deadline passed before it was tried"))
                continue
            answer = self._try_model(ref, request, on_call, remaining)
            if isinstance(answer, Completion):
                return answer
            outs.append(answer)
            log.info("tier %s: %s gave no answer (%s): %s", name, ref, answer.cause.value, answer.detail)
        raise _exhausted(name, outs)

    def _try_model(
        self, ref: str, request: CompletionRequest, on_call: CallSink | None, remaining: float | None
    ) -> Completion | _ModelOut:
        model = ModelRef.parse(ref)
        provider = self._providers.get(model.provider)
        if provider is None:
            raise ConfigError("tiers", f"no provider {model.provider!r} for {ref}")
        attempt = _ModelTry(ref, model, provider, request, on_call)
        try:
            return call_with_retries(
                lambda: self._attempt(attempt),
                self._retry,
                deadline_s=remaining,
                sleep=self._sleep,
                draw=self._draw,
                clock=self._clock,
                on_retry=lambda error, number, delay: log.info(
                    "%s: attempt %d failed (%s), retrying in %.2f s", ref, number, error.reason, delay
                ),
            )
        except _Skip as skip:
            return _ModelOut(ref, skip.cause, skip.detail, skip.retry_after)
        except ProviderRejected:
            raise
        except ProviderError as error:
            cause = OutCause.RATE_LIMITED if isinstance(error, ProviderRateLimited) else OutCause.FAILED
            return _ModelOut(ref, cause, f"{outcome_of(error).value}: {error.reason}", error.retry_after)

    def _attempt(self, attempt: _ModelTry) -> Completion:
        """One call: breaker, rate limit, the provider, then the outcome to breaker, limit and sink."""
        ref = attempt.ref
        if not self._breakers.allow(ref):
            raise _Skip(OutCause.BREAKER_OPEN, attempt.after("breaker open"))
        estimate = estimate_tokens(attempt.request)
        try:
            self._limits.acquire(ref, estimate)
        except ProviderRateLimited as refused:
            self._breakers.release(ref)
            raise _Skip(OutCause.RATE_LIMITED, attempt.after(refused.reason), refused.retry_after) from None
        attempt.attempts += 1
        started = time.perf_counter()
        with call_span(ref, attempt.attempts) as span:
            try:
                completion = attempt.provider.complete(attempt.model.model, attempt.request)
            except ProviderError as error:
                span.failed(outcome_of(error).value)
                self._failed(attempt, error, estimate, time.perf_counter() - started)
                raise
            except BaseException as error:  # not a call outcome (e.g. a model without a price): give all back
                span.failed(type(error).__name__)
                self._breakers.release(ref)
                self._limits.settle(ref, estimate, 0)
                raise
            span.succeeded(completion)
        self._breakers.record(ref, True)
        self._limits.settle(ref, estimate, completion.tokens)
        _emit(attempt, CallRecord.succeeded(ref, attempt.attempts, completion))
        return completion

    def _failed(self, attempt: _ModelTry, error: ProviderError, estimate: int, latency_s: float) -> None:
        ref = attempt.ref
        signal = breaker_signal(outcome_of(error))
        if signal is None:
            self._breakers.release(ref)
        else:
            self._breakers.record(ref, signal)
        # the prompt may have been counted by the provider; the output allowance was not used
        self._limits.settle(ref, estimate, estimate - attempt.request.max_tokens)
        attempt.last_error = error
        _emit(attempt, CallRecord.failed(ref, attempt.attempts, error, latency_s))


def _emit(attempt: _ModelTry, record: CallRecord) -> None:
    if attempt.on_call is not None:
        attempt.on_call(record)


def _exhausted(tier: str, outs: Sequence[_ModelOut]) -> ProviderError:
    """The error that tells the task (retry later) or the router (another tier) what happened."""
    summary = "; ".join(f"{out.model}: {out.detail}" for out in outs) or "no models"
    if outs and all(out.cause is OutCause.RATE_LIMITED for out in outs):
        waits = [out.retry_after for out in outs if out.retry_after is not None]
        reason = f"every model is rate limited: {summary}"
        return ProviderRateLimited("tier", tier, reason, min(waits) if waits else None)
    return TierUnavailable("tier", tier, summary)
