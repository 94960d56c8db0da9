"""The metrics the store has no row for: reflect runs and the cluster rate limiter's refusals
(counted in Redis), and queue lengths on a RabbitMQ broker."""

from __future__ import annotations

import time

import pytest
import redis

from tests.conftest import service_settings
from tests.integration.conftest import running_worker
from tests.integration.test_prometheus import scrape, total
from tierflow import Client
from tierflow.providers.resilience.config import RateLimit
from tierflow.providers.resilience.ratelimit import RateLimits
from tierflow.routing.errors import ProviderRateLimited
from tierflow.worker.app import MAINTENANCE_QUEUE

JOBS = [{"id": f"q-{n}", "kind": "prompt", "payload": {"prompt": f"What is {n} * 2?"}} for n in range(3)]


def test_limiter_refusals_and_reflect_runs_are_counted(db: object, pg_url: str, redis_url: str) -> None:
    with Client.from_settings(**service_settings(pg_url, redis_url)) as client:
        before = scrape(client)
        limits = RateLimits(
            redis.Redis.from_url(redis_url), {"fake:fake-small": RateLimit(requests_per_minute=1)}
        )
        limits.acquire("fake:fake-small")
        for _ in range(2):
            with pytest.raises(ProviderRateLimited):
                limits.acquire("fake:fake-small")
        refused = scrape(client)
        assert total(refused, "tierflow_rate_limit_refusals_total", model="fake:fake-small") == 2 + total(
            before, "tierflow_rate_limit_refusals_total", model="fake:fake-small"
        )
        runs = total(before, "tierflow_reflect_runs_total")
        with running_worker(client.app, queues=(MAINTENANCE_QUEUE,)):
            client.app.send_task("tierflow.reflect", queue=MAINTENANCE_QUEUE)
            deadline = time.monotonic() + 60
            while (
                total(scrape(client), "tierflow_reflect_runs_total") == runs and time.monotonic() < deadline
            ):
                time.sleep(0.2)
        after = scrape(client)
    assert total(after, "tierflow_reflect_runs_total") == runs + 1
    assert total(after, "tierflow_reflect_runs_total", result="unchanged") >= 1  # nothing to learn from


def test_queue_lengths_are_read_from_rabbitmq(db: object, pg_url: str, redis_url: str, amqp_url: str) -> None:
    settings = service_settings(pg_url, redis_url, broker_url=amqp_url, resilience_redis_url=redis_url)
    with Client.from_settings(**settings) as client:
        before = total(scrape(client), "tierflow_queue_length", queue="classify")
        client.submit(JOBS)  # no worker: the jobs wait in the classify queue
        queued = scrape(client)
    assert total(queued, "tierflow_queue_length", queue="classify") == before + len(JOBS)
    assert {name for (name, _) in queued} >= {"tierflow_queue_length"}
