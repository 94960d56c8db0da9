"""Service fixtures: the real PostgreSQL and Redis, and a real Celery worker.

A service that is missing skips the test on a laptop and fails it under CI (CI=true).
Each test session gets its own PostgreSQL database and its own Redis database number.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

AMQP_HOST_URL = os.environ.get("TIERFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
PG_ADMIN_URL = os.environ.get("TIERFLOW_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_HOST_URL = os.environ.get("TIERFLOW_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_TEST_DB = int(os.environ.get("TIERFLOW_TEST_REDIS_DB", "11"))


ROOT = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path | None:
    """A data set of ../shared/data: where TIERFLOW_TEST_DATA says, beside the checkout, or on this
    machine's shared folder (a clone elsewhere, as CI makes, has no ../shared of its own)."""
    candidates = [os.environ.get("TIERFLOW_TEST_DATA"), ROOT.parent / "shared" / "data", "/work/shared/data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / name).is_dir():
            return Path(candidate) / name
    return None


def missing_service(name: str, reason: object) -> None:
    message = f"{name} is not reachable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing service fails the run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tierflow_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        missing_service("PostgreSQL", exc.orig)
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database number of its own, flushed before and after the session."""
    url = f"{REDIS_HOST_URL}/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        missing_service("Redis", exc)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this test session's own, deleted afterwards."""
    vhost = f"tierflow_test_{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        missing_service("RabbitMQ", exc)
    yield f"{AMQP_HOST_URL}/{vhost}"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _rabbitmqctl("delete_vhost", vhost)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def purge_queues(broker_url: str, names: tuple[str, ...]) -> None:
    """Empty the named queues of a broker (those that exist)."""
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as connection:
        for name in names:
            with contextlib.suppress(Exception):  # a queue not declared yet holds nothing
                connection.default_channel.queue_purge(name)


@pytest.fixture()
def clean_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


def service_settings(pg: str, redis_url: str, **overrides: Any) -> dict[str, Any]:
    """Settings for the distributed mode against the test services."""
    return {
        "database_url": pg,
        "broker_url": redis_url,
        "result_backend": redis_url,
        "fake_latency_scale": 0.0,
        **overrides,
    }
