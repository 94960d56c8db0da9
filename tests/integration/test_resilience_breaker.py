"""Circuit breakers against the real Redis: opening, cooldown, probes, and sharing between processes.

Most tests inject a clock, so windows and cooldowns pass without waiting; the
tests across processes use the Redis server's clock, as workers do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tierflow.providers.resilience.breaker import Breakers, BreakerState
from tierflow.providers.resilience.config import BreakerConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "openai:gpt-4o-mini"
OTHER = "anthropic:claude-haiku-4-5"

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


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(prefix: str, **fields: Any) -> BreakerConfig:
    defaults: dict[str, Any] = {
        "window_s": 10.0,
        "window_buckets": 10,
        "min_calls": 10,
        "error_rate": 0.5,
        "cooldown_s": 5.0,
        "half_open_probes": 2,
        "probe_timeout_s": 20.0,
        "key_ttl_s": 60.0,
        "key_prefix": prefix,
    }
    return BreakerConfig(**{**defaults, **fields})


def opened(breakers: Breakers, model: str = MODEL) -> Breakers:
    for _ in range(breakers.config.min_calls):
        breakers.record(model, False)
    assert breakers.state(model) is BreakerState.OPEN
    return breakers


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


def test_breaker_never_opens_below_min_calls(client: redis.Redis, prefix: str) -> None:
    breakers = Breakers(client, config(prefix), clock=FakeClock())
    for _ in range(9):
        assert breakers.record(MODEL, False) is BreakerState.CLOSED
    assert breakers.allow(MODEL)
    status = breakers.status(MODEL)
    assert (status.calls, status.failures, status.error_rate) == (9, 9, 1.0)
    assert breakers.record(MODEL, False) is BreakerState.OPEN
    assert not breakers.allow(MODEL)


def test_breaker_opens_when_the_error_rate_reaches_the_threshold(client: redis.Redis, prefix: str) -> None:
    breakers = Breakers(client, config(prefix), clock=FakeClock())
    for ok in [True] * 6 + [False] * 4:
        breakers.record(MODEL, ok)
    assert breakers.record(MODEL, False) is BreakerState.CLOSED  # 5 of 11
    assert breakers.status(MODEL).error_rate == pytest.approx(5 / 11)
    assert breakers.record(MODEL, False) is BreakerState.OPEN  # 6 of 12
    assert breakers.status(MODEL).retry_in_s == 5.0
    assert breakers.state(OTHER) is BreakerState.CLOSED  # one breaker per model


def test_failures_slide_out_of_the_window(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    breakers = Breakers(client, config(prefix), clock=clock)
    for _ in range(9):
        breakers.record(MODEL, False)
    clock.advance(5.0)
    breakers.record(MODEL, True)
    assert (breakers.status(MODEL).calls, breakers.status(MODEL).failures) == (10, 9)
    clock.advance(5.5)  # the nine failures are more than window_s old now
    assert breakers.record(MODEL, False) is BreakerState.CLOSED
    assert (breakers.status(MODEL).calls, breakers.status(MODEL).failures) == (2, 1)
    window = client.hgetall(breakers.keys(MODEL)[1])
    assert len(window) == 3  # the stale bucket was swept: one bucket's n, the other's n and f


def test_half_open_after_cooldown_lets_only_the_configured_probes_through(
    client: redis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    breakers = opened(Breakers(client, config(prefix, half_open_probes=2), clock=clock))
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


def test_a_probe_success_closes_the_breaker_with_a_fresh_window(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    breakers = opened(Breakers(client, config(prefix), clock=clock))
    clock.advance(5.0)
    assert breakers.allow(MODEL)
    assert breakers.record(MODEL, True) is BreakerState.CLOSED
    status = breakers.status(MODEL)
    assert (status.state, status.calls, status.failures, status.probes) == (BreakerState.CLOSED, 0, 0, 0)
    assert all(breakers.allow(MODEL) for _ in range(5))


def test_a_probe_failure_opens_the_breaker_for_another_cooldown(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    breakers = opened(Breakers(client, config(prefix), clock=clock))
    clock.advance(5.0)
    assert breakers.allow(MODEL)
    assert breakers.record(MODEL, False) is BreakerState.OPEN
    assert not breakers.allow(MODEL)
    clock.advance(4.9)
    assert not breakers.allow(MODEL)
    clock.advance(0.1)
    assert breakers.allow(MODEL)


def test_a_released_probe_or_one_that_never_reports_frees_its_slot(client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    breakers = opened(Breakers(client, config(prefix, half_open_probes=1), clock=clock))
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


def test_results_of_calls_that_started_before_the_opening_are_ignored(
    client: redis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    breakers = opened(Breakers(client, config(prefix), clock=clock))
    clock.advance(2.0)
    assert breakers.record(MODEL, True) is BreakerState.OPEN
    assert breakers.record(MODEL, False) is BreakerState.OPEN
    assert breakers.status(MODEL).retry_in_s == 3.0  # the cooldown did not restart


def test_snapshot_reports_every_model_redis_knows_and_any_named(client: redis.Redis, prefix: str) -> None:
    breakers = opened(Breakers(client, config(prefix), clock=FakeClock()))
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
