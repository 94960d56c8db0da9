"""TierCaller paths where HTTP is beside the point: the in-package FakeProvider, the real Redis."""

from __future__ import annotations

import pytest
import redis

from tierflow.providers.base import CompletionRequest
from tierflow.providers.fake import FakeProvider
from tierflow.providers.pricing import price_table
from tierflow.providers.resilience.breaker import Breakers, BreakerState
from tierflow.providers.resilience.config import BreakerConfig, RateLimit
from tierflow.providers.resilience.ratelimit import RateLimits, estimate_tokens
from tierflow.providers.resilience.records import CallOutcome, CallRecord
from tierflow.providers.resilience.tier import TierCaller
from tierflow.providers.retry import RetryPolicy
from tierflow.routing.errors import ConfigError, ProviderRejected, TierUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

REQUEST = CompletionRequest(
    system="You answer questions.\nTask: answer", user="What is 12 * 7?", max_tokens=200
)
NO_WAIT = RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0)
PRICES = price_table({})


class FakeClock:
    def __init__(self) -> None:
        self.now = 2_000.0

    def __call__(self) -> float:
        return self.now


def make_breakers(client: redis.Redis, prefix: str, clock: FakeClock | None = None) -> Breakers:
    config = BreakerConfig(min_calls=2, cooldown_s=5, probe_timeout_s=10, key_ttl_s=60, key_prefix=prefix)
    return Breakers(client, config, clock=clock)


def test_a_success_is_recorded_with_usage_cost_and_latency(client: redis.Redis, prefix: str) -> None:
    caller = TierCaller(
        {"fake": FakeProvider(PRICES, 0.0)}, make_breakers(client, prefix), RateLimits(client), NO_WAIT
    )
    records: list[CallRecord] = []
    completion = caller.complete(["fake:fake-small", "fake:fake-large"], REQUEST, on_call=records.append)
    assert completion.model == "fake-small"
    assert records == [CallRecord.succeeded("fake:fake-small", 1, completion)]
    assert records[0].cost_usd > 0 and records[0].input_tokens > 0 and records[0].request_id


def test_a_failing_model_falls_back_after_its_retries(client: redis.Redis, prefix: str) -> None:
    fake = FakeProvider(PRICES, 0.0, failing_models=["fake:fake-small"])
    caller = TierCaller(
        {"fake": fake}, make_breakers(client, prefix), RateLimits(client), NO_WAIT, sleep=lambda s: None
    )
    records: list[CallRecord] = []
    assert (
        caller.complete(["fake:fake-small", "fake:fake-large"], REQUEST, on_call=records.append).model
        == "fake-large"
    )
    assert [(r.model, r.outcome) for r in records] == [
        ("fake:fake-small", CallOutcome.UNAVAILABLE),
        ("fake:fake-small", CallOutcome.UNAVAILABLE),
        ("fake:fake-large", CallOutcome.OK),
    ]
    assert records[0].error == "injected failure"


def test_a_rejected_half_open_probe_gives_its_slot_back(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    breakers = make_breakers(client, prefix, clock)
    for _ in range(2):
        breakers.record("fake:fake-xl", False)
    clock.now += 5.0
    caller = TierCaller({"fake": FakeProvider(PRICES, 0.0)}, breakers, RateLimits(client), NO_WAIT)
    with pytest.raises(ProviderRejected):
        caller.complete(["fake:fake-xl"], REQUEST)  # the fake knows no such model
    status = breakers.status("fake:fake-xl")
    assert (status.state, status.probes) == (BreakerState.HALF_OPEN, 0)


def test_tokens_reserved_for_a_call_are_settled_to_its_usage(client: redis.Redis, prefix: str) -> None:
    limits = RateLimits(
        client, {"fake:fake-small": RateLimit(tokens_per_minute=10_000)}, key_prefix=prefix, clock=FakeClock()
    )
    caller = TierCaller({"fake": FakeProvider(PRICES, 0.0)}, make_breakers(client, prefix), limits, NO_WAIT)
    completion = caller.complete(["fake:fake-small"], REQUEST)
    assert completion.tokens < estimate_tokens(REQUEST)
    assert float(client.hget(limits.key("fake:fake-small"), "t") or 0) == 10_000 - completion.tokens


def test_a_model_of_an_unknown_provider_is_a_configuration_error(client: redis.Redis, prefix: str) -> None:
    caller = TierCaller(
        {"fake": FakeProvider(PRICES, 0.0)}, make_breakers(client, prefix), RateLimits(client), NO_WAIT
    )
    with pytest.raises(ConfigError):
        caller.complete(["mystery:model", "fake:fake-small"], REQUEST)


def test_no_call_starts_after_the_deadline(client: redis.Redis, prefix: str) -> None:
    caller = TierCaller(
        {"fake": FakeProvider(PRICES, 0.0)}, make_breakers(client, prefix), RateLimits(client), NO_WAIT
    )
    records: list[CallRecord] = []
    with pytest.raises(TierUnavailable) as out:
        caller.complete(["fake:fake-small"], REQUEST, tier="small", deadline_s=0.0, on_call=records.append)
    assert out.value.reason == "fake:fake-small: deadline passed before it was tried"
    assert records == []
