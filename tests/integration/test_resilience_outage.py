"""A resilience Redis that is unreachable, or stops and comes back: jobs keep flowing.

Against a dead port (nothing listens on 127.0.0.1:1) and against a redis-server this
module starts itself on a free loopback port, stops mid-batch and starts again on the
same port (empty: it saves nothing). The broker and the store stay the test services.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tests.resilience_cases import FakeClock
from tierflow.providers.base import CompletionRequest
from tierflow.providers.resilience.breaker import Breakers, BreakerState
from tierflow.providers.resilience.config import BreakerConfig, RateLimit
from tierflow.providers.resilience.fallback import (
    DEFAULT_RETRY_S,
    FallbackBreakers,
    FallbackRateLimits,
    SharedStore,
    store_stats,
)
from tierflow.providers.resilience.local import LocalBreakers, LocalRateLimits
from tierflow.providers.resilience.ratelimit import RateLimits
from tierflow.routing.errors import ProviderRateLimited
from tierflow.store.db import redact, transaction
from tierflow.store.reports import batch_status
from tierflow.tasks.runtime import Runtime
from tierflow.tasks.submission import submit_file
from tierflow.worker.render import TERMINAL

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DEAD_URL = "redis://:s3cret@127.0.0.1:1/0"
MODEL = "fake:fake-small"
QUICK = BreakerConfig(window_s=10, min_calls=3, cooldown_s=5, probe_timeout_s=20, key_ttl_s=60)


class OwnRedis:
    """A redis-server of this test's own on a free loopback port, which it may stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder)]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise AssertionError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._process = None

    def keys(self, pattern: str) -> list[str]:
        client = redis.Redis.from_url(self.url)
        try:
            return sorted(key.decode() for key in client.scan_iter(match=pattern))
        finally:
            client.close()


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def fallback_pair(
    url: str, clock: FakeClock, limits: dict[str, RateLimit] | None = None
) -> tuple[FallbackBreakers, FallbackRateLimits, redis.Redis]:
    """Breakers and limits on `url` with per-process stand-ins, on one SharedStore paused by `clock`."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    store = SharedStore(redact(url), clock=clock)
    breakers = FallbackBreakers(Breakers(client, QUICK), LocalBreakers(QUICK), store)
    limits = limits or {}
    rate_limits = FallbackRateLimits(RateLimits(client, limits), LocalRateLimits(limits), store)
    return breakers, rate_limits, client


def test_a_dead_resilience_redis_falls_back_to_this_process_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    breakers, limits, client = fallback_pair(DEAD_URL, clock, {MODEL: RateLimit(requests_per_minute=2)})
    with caplog.at_level(logging.WARNING, logger="tierflow.providers.resilience.fallback"):
        assert breakers.allow(MODEL)
        for _ in range(3):
            breakers.record(MODEL, False)
        assert breakers.state(MODEL) is BreakerState.OPEN  # opened by this process's own breaker
        assert not breakers.allow(MODEL)
        limits.acquire(MODEL)
        limits.acquire(MODEL)
        with pytest.raises(ProviderRateLimited) as refused:
            limits.acquire(MODEL)
        clock.advance(DEFAULT_RETRY_S)  # tried again, still dead: the same outage
        assert not breakers.allow(MODEL)
    client.close()
    assert "rate limit of this process" in refused.value.reason
    stats = breakers.store.stats()
    assert (stats.shared, stats.outages, stats.recoveries) == (False, 1, 0)
    assert stats.fallback_calls == 10
    assert "ConnectionError" in stats.last_error
    logged = [r.getMessage() for r in caplog.records if r.name == "tierflow.providers.resilience.fallback"]
    assert len(logged) == 1, logged
    assert "redis://:***@127.0.0.1:1/0 unreachable" in logged[0]
    assert "s3cret" not in logged[0]


class SilentServer:
    """A loopback TCP server that takes connections and never answers: a Redis that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                self.connections.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


def test_a_redis_that_hangs_costs_one_timeout_per_pause_not_one_per_call() -> None:
    server = SilentServer()
    clock = FakeClock()
    client = redis.Redis.from_url(server.url, socket_timeout=0.3, socket_connect_timeout=0.3)
    store = SharedStore(redact(server.url), clock=clock)
    breakers = FallbackBreakers(Breakers(client, QUICK), LocalBreakers(QUICK), store)
    try:
        for _ in range(20):
            assert breakers.allow(MODEL)
        assert len(server.connections) == 1  # only the first call waited for Redis
        assert "Timeout" in store.stats().last_error
        clock.advance(DEFAULT_RETRY_S)
        for _ in range(20):
            assert breakers.allow(MODEL)
        assert len(server.connections) == 2
        assert store.stats().fallback_calls == 40 and store.stats().outages == 1
    finally:
        client.close()
        server.close()


def test_only_one_caller_tries_redis_again_per_pause(own_redis: OwnRedis) -> None:
    clock = FakeClock()
    breakers, _, client = fallback_pair(own_redis.url, clock)
    own_redis.stop()
    for _ in range(5):
        breakers.allow(MODEL)
    own_redis.start()
    clock.advance(DEFAULT_RETRY_S - 0.1)
    assert breakers.allow(MODEL)
    assert breakers.store.stats().shared is False  # within the pause Redis is not asked
    clock.advance(0.1)
    breakers.record(MODEL, False)
    stats = breakers.store.stats()
    assert (stats.shared, stats.outages, stats.recoveries, stats.fallback_calls) == (True, 1, 1, 6)
    assert own_redis.keys("tierflow:breaker:*") == [f"tierflow:breaker:{{{MODEL}}}:window"]
    client.close()


def test_a_cluster_limit_holds_again_once_redis_is_back(own_redis: OwnRedis) -> None:
    clock = FakeClock()
    limit = {MODEL: RateLimit(requests_per_minute=3)}
    _, limits, client = fallback_pair(own_redis.url, clock, limit)
    for _ in range(3):
        limits.acquire(MODEL)
    with pytest.raises(ProviderRateLimited, match="cluster rate limit"):
        limits.acquire(MODEL)
    own_redis.stop()
    for _ in range(3):
        limits.acquire(MODEL)  # the calls keep going, on this process's own allowance
    with pytest.raises(ProviderRateLimited, match="rate limit of this process"):
        limits.acquire(MODEL)
    own_redis.start()  # empty: the cluster's allowance is full again
    clock.advance(DEFAULT_RETRY_S)
    for _ in range(2):
        limits.acquire(MODEL)
    other_worker = RateLimits(redis.Redis.from_url(own_redis.url), limit)
    other_worker.acquire(MODEL)  # the cluster's last request goes to another process
    with pytest.raises(ProviderRateLimited, match="cluster rate limit"):
        limits.acquire(MODEL)
    assert limits.store.stats().recoveries == 1
    client.close()


def support_jobs(count: int, tag: str) -> list[dict[str, object]]:
    return [
        {"kind": "support", "payload": {"text": f"I forgot my password and cannot log in ({tag} {n})."}}
        for n in range(count)
    ]


def submit(app: object, runtime: Runtime, path: Path, jobs: list[dict[str, object]]) -> str:
    report = submit_file(app, runtime, write_jobs(path, jobs))
    assert report.batch_id is not None and report.accepted == len(jobs)
    return report.batch_id


def terminal(runtime: Runtime, batch_id: str) -> int:
    with transaction(runtime.sessions) as session:
        status = batch_status(session, batch_id)
    return sum(n for state, n in status.by_state.items() if state in TERMINAL)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def test_a_batch_goes_terminal_with_the_resilience_redis_on_a_dead_port(make_app, tmp_path: Path) -> None:
    app, runtime = make_app(resilience_redis_url=DEAD_URL)
    with running_worker(app, concurrency=4):
        batch = submit(app, runtime, tmp_path / "jobs.jsonl", support_jobs(12, "dead"))
        wait_terminal(runtime, batch, timeout_s=90)
    stats = store_stats(runtime.breakers)
    assert stats is not None
    assert stats.fallback_calls >= 12 * 2  # at least a classify snapshot and a model call per job
    assert (stats.shared, stats.outages, stats.recoveries) == (False, 1, 0)


def test_jobs_keep_flowing_while_the_resilience_redis_is_down_and_share_again_when_it_returns(
    make_app, tmp_path: Path, own_redis: OwnRedis
) -> None:
    rpm = 120
    app, runtime = make_app(
        resilience_redis_url=own_redis.url,
        rate_limits={MODEL: RateLimit(requests_per_minute=rpm)},
        fake_latency_scale=3.0,
    )
    assert isinstance(runtime.breakers, FallbackBreakers)
    store = runtime.breakers.store
    with running_worker(app, concurrency=4):
        first = submit(app, runtime, tmp_path / "first.jsonl", support_jobs(20, "first"))
        wait_for(lambda: terminal(runtime, first) >= 3, 60, "three jobs done before the stop")
        own_redis.stop()
        assert terminal(runtime, first) < 20, "stopped mid-batch"
        wait_terminal(runtime, first, timeout_s=90)
        assert store.stats().outages == 1 and store.stats().fallback_calls > 0
        own_redis.start()
        assert own_redis.keys("tierflow:*") == []  # a fresh server: nothing shared yet
        time.sleep(DEFAULT_RETRY_S + 0.5)  # the pause before Redis is tried again
        second = submit(app, runtime, tmp_path / "second.jsonl", support_jobs(10, "second"))
        wait_terminal(runtime, second, timeout_s=90)
    stats = store.stats()
    assert (stats.shared, stats.outages, stats.recoveries) == (True, 1, 1)
    assert f"tierflow:ratelimit:{{{MODEL}}}" in own_redis.keys("tierflow:ratelimit:*")
    assert f"tierflow:breaker:{{{MODEL}}}:window" in own_redis.keys("tierflow:breaker:*")
    # The cluster's allowance, spent by another process, is refused to this worker's calls.
    other = RateLimits(redis.Redis.from_url(own_redis.url), {MODEL: RateLimit(requests_per_minute=rpm)})
    with pytest.raises(ProviderRateLimited):
        for _ in range(rpm + 1):
            other.acquire(MODEL)
    with pytest.raises(ProviderRateLimited, match="cluster rate limit"):
        runtime.tier_caller.complete([MODEL], CompletionRequest(system="", user="hello", max_tokens=16))
