"""Circuit breakers against the real Redis: opening, cooldown, probes, and sharing between processes.

The state machine's cases are tests/resilience_cases.py's, shared with the per-process
breakers; here are those only Redis has (keys, other processes). Most inject a clock, so
windows and cooldowns pass without waiting; the tests across processes use the Redis
server's clock, as workers do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.resilience_cases import (
    BREAKER_DEFAULTS,
    MODEL,
    OTHER,
    AnyBreakers,
    BreakerCases,
    FakeClock,
    MakeBreakers,
    opened,
)
from tierflow.providers.resilience.breaker import Breakers, BreakerState
from tierflow.providers.resilience.config import BreakerConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]

# A second worker process: its own client and Breakers; prints what it sees of MODEL as JSON.
SECOND_PROCESS = """
import json, sys
import redis
from tierflow.providers.resilience.breaker import Breakers
from tierflow.providers.resilience.config import BreakerConfig
url, config, model, tries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
breakers = Breakers(redis.Redis.from_url(url), BreakerConfig.model_validate_json(config))
state = breakers.state(model).value
allowed = [breakers.allow(model) for _ in range(tries)]
print(json.dumps({"state": state, "allowed": allowed}))
"""


def config(prefix: str, **fields: Any) -> BreakerConfig:
    return BreakerConfig(**{**BREAKER_DEFAULTS, "key_prefix": prefix, **fields})


def in_other_processes(
    redis_url: str, cfg: BreakerConfig, tries: int, count: int = 1
) -> list[dict[str, Any]]:
    """What `count` other processes, started together, see of MODEL and whether `tries` calls may go."""
    args = [sys.executable, "-c", SECOND_PROCESS, redis_url, cfg.model_dump_json(), MODEL, str(tries)]
    processes = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(count)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


class TestRedisBreakers(BreakerCases):
    """The shared cases, on Redis (tests/unit/test_resilience_local.py runs them per-process)."""

    @pytest.fixture()
    def make(self, client: redis.Redis, prefix: str) -> MakeBreakers:
        def build(clock: FakeClock, **fields: Any) -> Breakers:
            return Breakers(client, config(prefix, **fields), clock=clock)

        self.client = client
        return build

    def buckets_kept(self, breakers: AnyBreakers, model: str) -> int:
        assert isinstance(breakers, Breakers)
        fields = self.client.hkeys(breakers.keys(model)[1])
        return len({field.decode().split(":")[0] for field in fields})


def test_every_key_is_namespaced_and_expires(client: redis.Redis, prefix: str) -> None:
    cfg = config(prefix)
    clock = FakeClock()
    breakers = Breakers(client, cfg, clock=clock)
    breakers.record(OTHER, False)
    opened(breakers)
    clock.advance(5.0)
    breakers.allow(MODEL)
    keys = sorted(key.decode() for key in client.scan_iter(match=prefix + "*"))
    assert keys == sorted(breakers.keys(OTHER)[1:] + breakers.keys(MODEL)[:1])
    assert keys[0].startswith(prefix + "{")
    assert all(0 < client.pttl(key) <= cfg.key_ttl_s * 1000 for key in keys)


def test_an_open_breaker_is_seen_and_refused_by_a_second_process(
    client: redis.Redis, prefix: str, redis_url: str
) -> None:
    cfg = config(prefix, cooldown_s=30.0)
    opened(Breakers(client, cfg))  # the Redis server's clock, as in production
    assert in_other_processes(redis_url, cfg, tries=3) == [{"state": "open", "allowed": [False] * 3}]


def test_half_open_probes_are_bounded_across_processes(
    client: redis.Redis, prefix: str, redis_url: str
) -> None:
    cfg = config(prefix, cooldown_s=0.3, half_open_probes=2)
    breakers = opened(Breakers(client, cfg))
    time.sleep(0.35)
    assert breakers.allow(MODEL)  # this process takes one probe slot
    others = in_other_processes(redis_url, cfg, tries=4, count=2)  # started together
    assert [other["state"] for other in others] == ["half_open", "half_open"]
    assert sum(other["allowed"].count(True) for other in others) == 1  # the one slot left
    assert breakers.record(MODEL, True) is BreakerState.CLOSED
    assert in_other_processes(redis_url, cfg, tries=2) == [{"state": "closed", "allowed": [True, True]}]
