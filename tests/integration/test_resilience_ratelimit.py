"""Cluster rate limits against the real Redis: requests and tokens per minute, across processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tierflow.providers.resilience.config import RateLimit
from tierflow.providers.resilience.ratelimit import RateLimits
from tierflow.routing.errors import ProviderRateLimited

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "openai:gpt-4o-mini"

# A worker process: waits for a common start time, then tries `tries` acquires as fast as it can.
WORKER = """
import json, sys, time
import redis
from tierflow.providers.resilience.config import RateLimit
from tierflow.providers.resilience.ratelimit import RateLimits
from tierflow.routing.errors import ProviderRateLimited
url, prefix, model, rpm, tries, start_at = sys.argv[1:7]
limit = RateLimit(requests_per_minute=int(rpm))
limits = RateLimits(redis.Redis.from_url(url), {model: limit}, key_prefix=prefix)
limits.key(model)  # warm up before the start
while time.time() < float(start_at):
    time.sleep(0.001)
granted, waits = 0, []
for _ in range(int(tries)):
    try:
        limits.acquire(model)
        granted += 1
    except ProviderRateLimited as refused:
        waits.append(refused.retry_after)
print(json.dumps({"granted": granted, "waits": waits}))
"""


class FakeClock:
    def __init__(self, start: float = 5_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_hold_across_two_processes(redis_url: str, prefix: str) -> None:
    # 6 a minute refill one every 10 s: both processes finish their tries well before that
    start_at = time.time() + 1.5
    args = [sys.executable, "-c", WORKER, redis_url, prefix, MODEL, "6", "15", str(start_at)]
    workers = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(2)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=20)
        assert worker.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(result["granted"] for result in results) == 6
    waits = [wait for result in results for wait in result["waits"]]
    assert len(waits) == 24
    assert all(0 < wait <= 10.0 for wait in waits)  # one request refills in 60 / 6 s


def test_an_exhausted_limit_says_when_there_is_room_again(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    limits = RateLimits(client, {MODEL: RateLimit(requests_per_minute=6)}, key_prefix=prefix, clock=clock)
    for _ in range(6):
        limits.acquire(MODEL)
    with pytest.raises(ProviderRateLimited) as refused:
        limits.acquire(MODEL)
    assert (refused.value.provider, refused.value.model) == ("openai", "gpt-4o-mini")
    assert refused.value.retry_after == 10.0
    assert "requests per minute" in refused.value.reason
    clock.now += 4.0
    with pytest.raises(ProviderRateLimited) as again:
        limits.acquire(MODEL)
    assert again.value.retry_after == 6.0
    clock.now += 6.0
    limits.acquire(MODEL)


def test_tokens_per_minute_are_reserved_then_settled_to_real_usage(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    limits = RateLimits(client, {MODEL: RateLimit(tokens_per_minute=1000)}, key_prefix=prefix, clock=clock)
    limits.acquire(MODEL, 600)
    with pytest.raises(ProviderRateLimited) as refused:
        limits.acquire(MODEL, 600)
    assert refused.value.retry_after == 12.0  # 200 tokens missing, 1000 a minute
    assert "tokens per minute" in refused.value.reason
    limits.settle(MODEL, 600, 100)  # the call used far less than reserved
    limits.acquire(MODEL, 600)
    limits.settle(MODEL, 600, 1100)  # and this one more: the bucket goes below zero
    assert float(client.hget(limits.key(MODEL), "t") or 0) == -200.0


def test_a_request_larger_than_a_minute_waits_for_a_full_bucket(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    limits = RateLimits(client, {MODEL: RateLimit(tokens_per_minute=1000)}, key_prefix=prefix, clock=clock)
    limits.acquire(MODEL, 10)
    with pytest.raises(ProviderRateLimited) as refused:
        limits.acquire(MODEL, 50_000)
    assert refused.value.retry_after == pytest.approx(0.6)
    clock.now += 0.6
    limits.acquire(MODEL, 50_000)


def test_both_limits_must_have_room_and_the_longer_wait_is_given(client: redis.Redis, prefix: str) -> None:
    limit = RateLimit(requests_per_minute=2, tokens_per_minute=600)
    limits = RateLimits(client, {MODEL: limit}, key_prefix=prefix, clock=FakeClock())
    limits.acquire(MODEL, 500)
    with pytest.raises(ProviderRateLimited) as refused:
        limits.acquire(MODEL, 500)  # a request is left, 100 tokens are not enough
    assert refused.value.retry_after == 40.0
    limits.acquire(MODEL, 100)  # the refusal took nothing
    with pytest.raises(ProviderRateLimited) as no_requests:
        limits.acquire(MODEL, 0)
    assert no_requests.value.retry_after == 30.0
    assert 0 < client.pttl(limits.key(MODEL)) <= 180_000


def test_models_without_a_limit_cost_no_redis_key(client: redis.Redis, prefix: str) -> None:
    limits = RateLimits(
        client, {"anthropic:claude-haiku-4-5": RateLimit(requests_per_minute=1)}, key_prefix=prefix
    )
    for _ in range(100):
        limits.acquire(MODEL, 10_000)
        limits.settle(MODEL, 10_000, 5)
    assert list(client.scan_iter(match=prefix + "*")) == []


def test_a_default_limit_applies_to_models_not_named(client: redis.Redis, prefix: str) -> None:
    limits = RateLimits(
        client,
        {MODEL: RateLimit()},
        default=RateLimit(requests_per_minute=1),
        key_prefix=prefix,
        clock=FakeClock(),
    )
    limits.acquire("openai:gpt-4o")
    with pytest.raises(ProviderRateLimited):
        limits.acquire("openai:gpt-4o")
    for _ in range(5):
        limits.acquire(MODEL)  # named as unlimited
