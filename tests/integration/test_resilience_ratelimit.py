"""Cluster rate limits against the real Redis: requests and tokens per minute, across processes.

The token buckets' cases are tests/resilience_cases.py's, shared with the per-process limits;
here are those only Redis has (keys, other processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.resilience_cases import MODEL, AnyLimits, FakeClock, MakeLimits, RateLimitCases
from tierflow.providers.resilience.config import RateLimit
from tierflow.providers.resilience.ratelimit import RateLimits

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]

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


class TestRedisRateLimits(RateLimitCases):
    """The shared cases, on Redis (tests/unit/test_resilience_local.py runs them per-process)."""

    @pytest.fixture()
    def make(self, client: redis.Redis, prefix: str) -> MakeLimits:
        def build(
            clock: FakeClock, limits: dict[str, RateLimit], default: RateLimit | None = None
        ) -> RateLimits:
            default = default or RateLimit()
            return RateLimits(client, limits, default=default, key_prefix=prefix, clock=clock)

        self.client = client
        return build

    def tokens_left(self, limits: AnyLimits, model: str) -> float:
        assert isinstance(limits, RateLimits)
        return float(self.client.hget(limits.key(model), "t") or "nan")


def test_every_bucket_key_expires(client: redis.Redis, prefix: str) -> None:
    limits = RateLimits(client, {MODEL: RateLimit(requests_per_minute=2)}, key_prefix=prefix)
    limits.acquire(MODEL)
    assert 0 < client.pttl(limits.key(MODEL)) <= 180_000


def test_models_without_a_limit_cost_no_redis_key(client: redis.Redis, prefix: str) -> None:
    limits = RateLimits(
        client, {"anthropic:claude-haiku-4-5": RateLimit(requests_per_minute=1)}, key_prefix=prefix
    )
    for _ in range(100):
        limits.acquire(MODEL, 10_000)
        limits.settle(MODEL, 10_000, 5)
    assert list(client.scan_iter(match=prefix + "*")) == []
