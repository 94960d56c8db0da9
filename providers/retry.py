"""The retry policy of provider calls: which failures to retry, and how long to wait first.

Owns `retry_delay`, a pure function (the random draw is an argument): exponential
backoff with full jitter, never shorter than a provider's Retry-After, bounded
attempts, and no retry that cannot finish before a deadline. Only
ProviderTimeout, ProviderRateLimited and ProviderUnavailable are retried; a
rejected request would be rejected again. `call_with_retries` applies the policy
to a call; the resilience layer (breakers, rate limits, fallback) wraps it.
Imports no SDK and no service client.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tierflow.routing.errors import (
    ConfigError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)

T = TypeVar("T")

RETRYABLE: tuple[type[ProviderError], ...] = (ProviderTimeout, ProviderRateLimited, ProviderUnavailable)
MAX_EXPONENT = 60  # beyond this the backoff is max_delay_s anyway; keeps 2**n a sane float


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of retrying one provider call.

    Attributes:
        max_attempts: attempts in all, the first included (1 = never retry).
        base_delay_s: the backoff ceiling after the first failure; it doubles per attempt.
        max_delay_s: the backoff ceiling never grows past this.
        max_retry_after_s: a Retry-After longer than this is not waited for: the call
            fails at once, so that a fallback model can take it.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("retry.max_attempts", "must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ConfigError("retry.base_delay_s", "must be >= 0 and at most retry.max_delay_s")
        if self.max_retry_after_s < 0:
            raise ConfigError("retry.max_retry_after_s", "must be >= 0")


def backoff_ceiling(policy: RetryPolicy, attempt: int) -> float:
    """The largest jittered wait after `attempt` failed attempts: base * 2**(attempt-1), capped."""
    exponent = min(max(attempt - 1, 0), MAX_EXPONENT)
    return min(policy.max_delay_s, policy.base_delay_s * 2.0**exponent)


def retry_delay(
    policy: RetryPolicy,
    error: BaseException,
    attempt: int,
    *,
    random_fraction: float,
    remaining_s: float | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or None to give up and raise `error`.

    Args:
        policy: the bounds.
        error: how attempt number `attempt` failed.
        attempt: how many attempts have been made, the failed one included (1-based).
        random_fraction: a uniform draw from [0, 1); full jitter waits that share of the ceiling.
        remaining_s: time left before the caller's deadline; None for no deadline.
    """
    if not isinstance(error, RETRYABLE) or attempt >= policy.max_attempts:
        return None
    delay = min(max(random_fraction, 0.0), 1.0) * backoff_ceiling(policy, attempt)
    if error.retry_after is not None:
        if error.retry_after > policy.max_retry_after_s:
            return None
        delay = max(delay, error.retry_after)
    if remaining_s is not None and delay >= remaining_s:
        return None
    return delay


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    deadline_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[ProviderError, int, float], None] | None = None,
) -> T:
    """`call()`, retried as `policy` allows; the last error is raised when it allows no more.

    Args:
        call: one attempt; raises a ProviderError on failure.
        policy: the bounds.
        deadline_s: seconds from now after which no retry starts.
        sleep, draw, clock: time.sleep, random.random and time.monotonic, replaceable in tests.
        on_retry: told (error, failed attempt, delay) before each wait, e.g. to count retries.
    """
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except ProviderError as error:
            remaining = None if deadline_s is None else deadline_s - (clock() - started)
            delay = retry_delay(policy, error, attempt, random_fraction=draw(), remaining_s=remaining)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(error, attempt, delay)
            sleep(delay)
