"""The per-process breakers and rate limits, held to the same cases as the Redis ones.

tests/resilience_cases.py holds the cases; tests/integration/test_resilience_breaker.py and
test_resilience_ratelimit.py run them against Redis. Here they run in memory, on an injected clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.resilience_cases import (
    BREAKER_DEFAULTS,
    MODEL,
    AnyBreakers,
    AnyLimits,
    BreakerCases,
    FakeClock,
    MakeBreakers,
    MakeLimits,
    RateLimitCases,
    opened,
)
from tierflow.providers.resilience.breaker import BreakerState
from tierflow.providers.resilience.config import BreakerConfig, RateLimit
from tierflow.providers.resilience.fallback import store_stats
from tierflow.providers.resilience.local import LocalBreakers, LocalRateLimits
from tierflow.routing.errors import ProviderRateLimited


def local_breakers(clock: FakeClock, **fields: Any) -> LocalBreakers:
    return LocalBreakers(BreakerConfig(**{**BREAKER_DEFAULTS, **fields}), clock=clock)


class TestLocalBreakers(BreakerCases):
    @pytest.fixture()
    def make(self) -> MakeBreakers:
        return local_breakers

    def buckets_kept(self, breakers: AnyBreakers, model: str) -> int:
        assert isinstance(breakers, LocalBreakers)
        return len(breakers._models[model].window)


class TestLocalRateLimits(RateLimitCases):
    @pytest.fixture()
    def make(self) -> MakeLimits:
        def build(
            clock: FakeClock, limits: dict[str, RateLimit], default: RateLimit | None = None
        ) -> LocalRateLimits:
            return LocalRateLimits(limits, default=default or RateLimit(), clock=clock)

        return build

    def tokens_left(self, limits: AnyLimits, model: str) -> float:
        assert isinstance(limits, LocalRateLimits)
        left = limits.tokens_left(model)
        assert left is not None
        return left


def test_a_breaker_is_forgotten_key_ttl_after_its_last_change() -> None:
    # as a breaker's Redis keys expire; Redis's own expiry runs on real time, so this case is local only
    clock = FakeClock()
    breakers = opened(local_breakers(clock, cooldown_s=30.0, probe_timeout_s=20.0, key_ttl_s=60.0))
    clock.advance(59.9)
    assert breakers.state(MODEL) is BreakerState.HALF_OPEN
    clock.advance(0.2)
    status = breakers.status(MODEL)
    assert (status.state, status.calls) == (BreakerState.CLOSED, 0)
    assert breakers.snapshot() == {}


def test_asking_a_closed_breaker_keeps_no_state() -> None:
    breakers = local_breakers(FakeClock())
    assert all(breakers.allow(MODEL) for _ in range(100))
    assert breakers.snapshot() == {}


def test_a_local_refusal_says_it_is_this_process_that_is_limited() -> None:
    limits = LocalRateLimits({MODEL: RateLimit(requests_per_minute=1)}, clock=FakeClock())
    limits.acquire(MODEL)
    with pytest.raises(ProviderRateLimited) as refused:
        limits.acquire(MODEL)
    assert refused.value.reason == "rate limit of this process: requests per minute used up"
    assert refused.value.retry_after == 60.0


def test_per_process_breakers_have_no_shared_store_to_report() -> None:
    assert store_stats(LocalBreakers()) is None
    assert store_stats(None) is None
