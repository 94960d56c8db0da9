"""Fixtures for the pipeline against the real PostgreSQL, Redis and a real Celery worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from sqlalchemy import Engine, text

from tests.conftest import service_settings
from tierflow.store.db import make_engine, transaction
from tierflow.store.models import Base
from tierflow.store.schema import upgrade
from tierflow.tasks.leases import stop_beats
from tierflow.tasks.runtime import Runtime, forget_runtime, runtime_for
from tierflow.worker.app import ALL_QUEUES, TierflowCelery, create_app
from tierflow.worker.settings import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test Redis database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture()
def prefix(client: redis.Redis, request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test:{request.module.__name__.rsplit('.', 1)[-1]}:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def migrated(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def db(migrated: Engine, clean_redis: str) -> Engine:
    """The migrated test database, emptied before the test."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with migrated.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return migrated


@pytest.fixture()
def make_app(
    db: Engine, pg_url: str, redis_url: str
) -> Iterator[Callable[..., tuple[TierflowCelery, Runtime]]]:
    """Build apps on the test services; their connection pools are closed when the test ends."""
    built: list[tuple[TierflowCelery, Runtime]] = []

    def build(**overrides: Any) -> tuple[TierflowCelery, Runtime]:
        app = create_app(load_settings(**service_settings(pg_url, redis_url, **overrides)))
        built.append((app, runtime_for(app)))
        return built[-1]

    yield build
    for app, runtime in built:
        forget_runtime(app)
        runtime.engine.dispose()


@contextmanager
def running_worker(
    app: TierflowCelery,
    queues: tuple[str, ...] = ALL_QUEUES,
    concurrency: int = 8,
    hostname: str = "it-worker@localhost",
) -> Iterator[None]:
    """A real Celery worker consuming from the real Redis, on threads in this process."""
    with start_worker(
        app,
        pool="threads",
        concurrency=concurrency,
        perform_ping_check=False,
        queues=list(queues),
        loglevel="WARNING",
        shutdown_timeout=30.0,
        hostname=hostname,
    ):
        yield
    stop_beats()  # a worker started this way sends no worker_shutdown: give its leases up here


def write_jobs(path: Path, jobs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    return path


def wait_terminal(runtime: Runtime, batch_id: str, timeout_s: float = 60.0) -> None:
    from tierflow.store.reports import batch_status
    from tierflow.worker.render import TERMINAL

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with transaction(runtime.sessions) as session:
            status = batch_status(session, batch_id)
        if status.total and sum(n for s, n in status.by_state.items() if s in TERMINAL) == status.total:
            return
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} not terminal after {timeout_s}s: {status.by_state}")


TIERFLOW = str(Path(sys.executable).with_name("tierflow"))


def run(env: dict[str, str], *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """`tierflow ARGS` as a user runs it, bounded in time."""
    done = subprocess.run([TIERFLOW, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"tierflow {' '.join(args)} failed: {done.stderr}")
    return done


@pytest.fixture()
def env(db: Engine, pg_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a `tierflow` command on the test services (and no other TIERFLOW_ setting)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    return {
        **base,
        "TIERFLOW_DATABASE_URL": pg_url,
        "TIERFLOW_BROKER_URL": redis_url,
        "TIERFLOW_RESULT_BACKEND": redis_url,
        "TIERFLOW_FAKE_LATENCY_SCALE": "0",
    }
