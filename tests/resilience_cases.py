"""The cases every breaker and rate limit implementation is held to: Redis's and the per-process one.

Not a test module itself: tests/integration/test_resilience_breaker.py and
test_resilience_ratelimit.py run them on Redis, tests/unit/test_resilience_local.py
on the per-process classes, each by subclassing and providing the `make` fixture
(and the `buckets_kept` / `tokens_left` hooks that look inside the state).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import pytest

from tierflow.providers.resilience.breaker import BreakerState, BreakerStatus
from tierflow.providers.resilience.config import BreakerConfig, RateLimit
from tierflow.routing.errors import ProviderRateLimited

MODEL = "openai:gpt-4o-mini"
OTHER = "anthropic:claude-haiku-4-5"


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class AnyBreakers(Protocol):
    config: BreakerConfig

    def allow(self, model_ref: str) -> bool: ...
    def record(self, model_ref: str, ok: bool) -> BreakerState: ...
    def release(self, model_ref: str) -> None: ...
    def state(self, model_ref: str) -> BreakerState: ...
    def status(self, model_ref: str) -> BreakerStatus: ...
    def snapshot(self, model_refs: Any = None) -> dict[str, BreakerStatus]: ...
    def reset(self, model_ref: str) -> None: ...


class AnyLimits(Protocol):
    def acquire(self, model_ref: str, tokens_estimate: int = 0) -> None: ...
    def settle(self, model_ref: str, tokens_estimate: int, tokens_used: int) -> None: ...


class MakeBreakers(Protocol):
    def __call__(self, clock: FakeClock, **fields: Any) -> AnyBreakers: ...


class MakeLimits(Protocol):
    def __call__(
        self, clock: FakeClock, limits: dict[str, RateLimit], default: RateLimit | None = None
    ) -> AnyLimits: ...


BREAKER_DEFAULTS: dict[str, Any] = {
    "window_s": 10.0,
    "window_buckets": 10,
    "min_calls": 10,
    "error_rate": 0.5,
    "cooldown_s": 5.0,
    "half_open_probes": 2,
    "probe_timeout_s": 20.0,
    "key_ttl_s": 60.0,
}


def opened(breakers: AnyBreakers, model: str = MODEL) -> AnyBreakers:
    for _ in range(breakers.config.min_calls):
        breakers.record(model, False)
    assert breakers.state(model) is BreakerState.OPEN
    return breakers


class BreakerCases:
    """The breaker state machine: window, threshold, cooldown, probes."""

    @pytest.fixture()
    def make(self) -> MakeBreakers:
        raise NotImplementedError

    def buckets_kept(self, breakers: AnyBreakers, model: str) -> int:
        """How many time buckets the model's window holds now."""
        raise NotImplementedError

    def test_breaker_never_opens_below_min_calls(self, make: MakeBreakers) -> None:
        breakers = make(FakeClock())
        for _ in range(9):
            assert breakers.record(MODEL, False) is BreakerState.CLOSED
        assert breakers.allow(MODEL)
        status = breakers.status(MODEL)
        assert (status.calls, status.failures, status.error_rate) == (9, 9, 1.0)
        assert breakers.record(MODEL, False) is BreakerState.OPEN
        assert not breakers.allow(MODEL)

    def test_breaker_opens_when_the_error_rate_reaches_the_threshold(self, make: MakeBreakers) -> None:
        breakers = make(FakeClock())
        for ok in [True] * 6 + [False] * 4:
            breakers.record(MODEL, ok)
        assert breakers.record(MODEL, False) is BreakerState.CLOSED  # 5 of 11
        assert breakers.status(MODEL).error_rate == pytest.approx(5 / 11)
        assert breakers.record(MODEL, False) is BreakerState.OPEN  # 6 of 12
        assert breakers.status(MODEL).retry_in_s == 5.0
        assert breakers.state(OTHER) is BreakerState.CLOSED  # one breaker per model

    def test_failures_slide_out_of_the_window(self, make: MakeBreakers) -> None:
        clock = FakeClock()
        breakers = make(clock)
        for _ in range(9):
            breakers.record(MODEL, False)
        clock.advance(5.0)
        breakers.record(MODEL, True)
        assert (breakers.status(MODEL).calls, breakers.status(MODEL).failures) == (10, 9)
        clock.advance(5.5)  # the nine failures are more than window_s old now
        assert breakers.record(MODEL, False) is BreakerState.CLOSED
        assert (breakers.status(MODEL).calls, breakers.status(MODEL).failures) == (2, 1)
        assert self.buckets_kept(breakers, MODEL) == 2  # the stale bucket was swept

    def test_half_open_after_cooldown_lets_only_the_configured_probes_through(
        self, make: MakeBreakers
    ) -> None:
        clock = FakeClock()
        breakers = opened(make(clock, half_open_probes=2))
        clock.advance(4.9)
        assert not breakers.allow(MODEL)
        clock.advance(0.1)
        assert breakers.state(MODEL) is BreakerState.HALF_OPEN
        start = threading.Barrier(16)
        answers: list[bool] = []

        def ask() -> None:
            start.wait()
            answers.append(breakers.allow(MODEL))

        threads = [threading.Thread(target=ask) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [False] * 14 + [True] * 2
        assert breakers.status(MODEL).probes == 2

    def test_a_probe_success_closes_the_breaker_with_a_fresh_window(self, make: MakeBreakers) -> None:
        clock = FakeClock()
        breakers = opened(make(clock))
        clock.advance(5.0)
        assert breakers.allow(MODEL)
        assert breakers.record(MODEL, True) is BreakerState.CLOSED
        status = breakers.status(MODEL)
        assert (status.state, status.calls, status.failures, status.probes) == (BreakerState.CLOSED, 0, 0, 0)
        assert all(breakers.allow(MODEL) for _ in range(5))

    def test_a_probe_failure_opens_the_breaker_for_another_cooldown(self, make: MakeBreakers) -> None:
        clock = FakeClock()
        breakers = opened(make(clock))
        clock.advance(5.0)
        assert breakers.allow(MODEL)
        assert breakers.record(MODEL, False) is BreakerState.OPEN
        assert not breakers.allow(MODEL)
        clock.advance(4.9)
        assert not breakers.allow(MODEL)
        clock.advance(0.1)
        assert breakers.allow(MODEL)

    def test_a_released_probe_or_one_that_never_reports_frees_its_slot(self, make: MakeBreakers) -> None:
        clock = FakeClock()
        breakers = opened(make(clock, half_open_probes=1))
        clock.advance(5.0)
        assert breakers.allow(MODEL)
        assert not breakers.allow(MODEL)
        breakers.release(MODEL)  # e.g. the probe's request was rejected: it says nothing of the model
        assert breakers.state(MODEL) is BreakerState.HALF_OPEN
        assert breakers.allow(MODEL)
        clock.advance(19.0)
        assert not breakers.allow(MODEL)
        clock.advance(1.0)  # probe_timeout_s: the probe's worker is taken for dead
        assert breakers.allow(MODEL)

    def test_results_of_calls_that_started_before_the_opening_are_ignored(self, make: MakeBreakers) -> None:
        clock = FakeClock()
        breakers = opened(make(clock))
        clock.advance(2.0)
        assert breakers.record(MODEL, True) is BreakerState.OPEN
        assert breakers.record(MODEL, False) is BreakerState.OPEN
        assert breakers.status(MODEL).retry_in_s == 3.0  # the cooldown did not restart

    def test_snapshot_reports_every_model_known_and_any_named(self, make: MakeBreakers) -> None:
        breakers = opened(make(FakeClock()))
        breakers.record(OTHER, True)
        snapshot = breakers.snapshot()
        assert {ref: status.state for ref, status in snapshot.items()} == {
            MODEL: BreakerState.OPEN,
            OTHER: BreakerState.CLOSED,
        }
        named = breakers.snapshot([OTHER, "openai:gpt-4o"])
        assert named["openai:gpt-4o"].state is BreakerState.CLOSED and named["openai:gpt-4o"].calls == 0
        assert named[OTHER].calls == 1
        breakers.reset(MODEL)
        assert breakers.state(MODEL) is BreakerState.CLOSED


class RateLimitCases:
    """The token buckets: requests and tokens per minute, refills, debts, defaults."""

    @pytest.fixture()
    def make(self) -> MakeLimits:
        raise NotImplementedError

    def tokens_left(self, limits: AnyLimits, model: str) -> float:
        """The level of the model's tokens bucket as last stored."""
        raise NotImplementedError

    def test_an_exhausted_limit_says_when_there_is_room_again(self, make: MakeLimits) -> None:
        clock = FakeClock(5_000.0)
        limits = make(clock, {MODEL: RateLimit(requests_per_minute=6)})
        for _ in range(6):
            limits.acquire(MODEL)
        with pytest.raises(ProviderRateLimited) as refused:
            limits.acquire(MODEL)
        assert (refused.value.provider, refused.value.model) == ("openai", "gpt-4o-mini")
        assert refused.value.retry_after == 10.0
        assert "requests per minute" in refused.value.reason
        clock.advance(4.0)
        with pytest.raises(ProviderRateLimited) as again:
            limits.acquire(MODEL)
        assert again.value.retry_after == 6.0
        clock.advance(6.0)
        limits.acquire(MODEL)

    def test_tokens_per_minute_are_reserved_then_settled_to_real_usage(self, make: MakeLimits) -> None:
        clock = FakeClock(5_000.0)
        limits = make(clock, {MODEL: RateLimit(tokens_per_minute=1000)})
        limits.acquire(MODEL, 600)
        with pytest.raises(ProviderRateLimited) as refused:
            limits.acquire(MODEL, 600)
        assert refused.value.retry_after == 12.0  # 200 tokens missing, 1000 a minute
        assert "tokens per minute" in refused.value.reason
        limits.settle(MODEL, 600, 100)  # the call used far less than reserved
        limits.acquire(MODEL, 600)
        limits.settle(MODEL, 600, 1100)  # and this one more: the bucket goes below zero
        assert self.tokens_left(limits, MODEL) == -200.0
        with pytest.raises(ProviderRateLimited) as in_debt:
            limits.acquire(MODEL, 100)
        assert in_debt.value.retry_after == 18.0  # 300 tokens from -200 to 100
        limits.settle(MODEL, 0, 5_000)  # a debt is bounded by one minute's allowance
        assert self.tokens_left(limits, MODEL) == -1000.0

    def test_a_request_larger_than_a_minute_waits_for_a_full_bucket(self, make: MakeLimits) -> None:
        clock = FakeClock(5_000.0)
        limits = make(clock, {MODEL: RateLimit(tokens_per_minute=1000)})
        limits.acquire(MODEL, 10)
        with pytest.raises(ProviderRateLimited) as refused:
            limits.acquire(MODEL, 50_000)
        assert refused.value.retry_after == pytest.approx(0.6)
        clock.advance(0.6)
        limits.acquire(MODEL, 50_000)

    def test_both_limits_must_have_room_and_the_longer_wait_is_given(self, make: MakeLimits) -> None:
        limits = make(FakeClock(5_000.0), {MODEL: RateLimit(requests_per_minute=2, tokens_per_minute=600)})
        limits.acquire(MODEL, 500)
        with pytest.raises(ProviderRateLimited) as refused:
            limits.acquire(MODEL, 500)  # a request is left, 100 tokens are not enough
        assert refused.value.retry_after == 40.0
        limits.acquire(MODEL, 100)  # the refusal took nothing
        with pytest.raises(ProviderRateLimited) as no_requests:
            limits.acquire(MODEL, 0)
        assert no_requests.value.retry_after == 30.0

    def test_a_default_limit_applies_to_models_not_named(self, make: MakeLimits) -> None:
        limits = make(FakeClock(5_000.0), {MODEL: RateLimit()}, RateLimit(requests_per_minute=1))
        limits.acquire("openai:gpt-4o")
        with pytest.raises(ProviderRateLimited):
            limits.acquire("openai:gpt-4o")
        for _ in range(5):
            limits.acquire(MODEL)  # named as unlimited

    def test_a_bucket_refills_continuously_up_to_one_minute(self, make: MakeLimits) -> None:
        clock = FakeClock(5_000.0)
        limits = make(clock, {MODEL: RateLimit(requests_per_minute=60)})
        for _ in range(60):
            limits.acquire(MODEL)
        clock.advance(600.0)  # ten minutes refill only one minute's allowance
        for _ in range(60):
            limits.acquire(MODEL)
        with pytest.raises(ProviderRateLimited) as refused:
            limits.acquire(MODEL)
        assert refused.value.retry_after == 1.0
