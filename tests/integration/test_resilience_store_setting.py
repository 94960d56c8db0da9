"""Where breakers and rate limits live is an explicit setting: `tierflow worker` as a user starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.integration.conftest import TIERFLOW, run
from tierflow.routing.errors import ConfigError
from tierflow.worker.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

AMQP_URL = os.environ.get("TIERFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672") + "//"


def test_an_amqp_worker_with_no_resilience_store_refuses_to_start_naming_both_choices(
    env: dict[str, str],
) -> None:
    done = run({**env, "TIERFLOW_BROKER_URL": AMQP_URL}, "worker", "--tier", "small")
    assert done.returncode == 1
    lines = done.stderr.strip().split("\n")
    assert lines == [
        "error: setting TIERFLOW_RESILIENCE_REDIS_URL: an amqp:// broker has no Redis for breakers and "
        "rate limits: set it to a redis:// URL (breakers and rate limits shared by every worker) or local "
        "(each worker process keeps its own)"
    ]


def test_a_resilience_store_that_is_neither_redis_nor_local_is_refused(env: dict[str, str]) -> None:
    done = run({**env, "TIERFLOW_RESILIENCE_REDIS_URL": "amqp://elsewhere//"}, "worker")
    assert done.returncode == 1
    assert "TIERFLOW_RESILIENCE_REDIS_URL" in done.stderr or "resilience_redis_url" in done.stderr
    assert "local" in done.stderr and "Traceback" not in done.stderr


def test_a_local_store_is_said_once_at_worker_start(env: dict[str, str]) -> None:
    worker = subprocess.Popen(
        [TIERFLOW, "worker", "--tier", "small", "--concurrency", "1", "--hostname", "local-store@localhost"],
        env={
            **env,
            "TIERFLOW_BROKER_URL": env["TIERFLOW_BROKER_URL"],
            "TIERFLOW_RESILIENCE_REDIS_URL": "local",
        },
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    seen: list[str] = []
    try:
        assert worker.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = worker.stderr.readline()
            if not line or "ready" in line:
                break
            seen.append(line)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    said = [line for line in seen if "per-process" in line]
    assert len(said) == 1, seen
    assert "TIERFLOW_RESILIENCE_REDIS_URL=local" in said[0]


@pytest.mark.parametrize(
    ("fields", "shared", "local"),
    [
        ({"broker_url": "redis://127.0.0.1:6379/0"}, "redis://127.0.0.1:6379/0", False),
        ({"broker_url": "redis://127.0.0.1:6379/0", "resilience_redis_url": "local"}, None, True),
        ({"broker_url": AMQP_URL, "resilience_redis_url": "redis://r:6379/2"}, "redis://r:6379/2", False),
        ({"broker_url": AMQP_URL, "resilience_redis_url": "local"}, None, True),
        (
            {"broker_url": "redis://127.0.0.1:6379/0", "resilience_redis_url": ""},
            "redis://127.0.0.1:6379/0",
            False,
        ),
        ({}, None, False),  # embedded: one process, no breakers
    ],
)
def test_the_resilience_store_each_setting_gives(
    fields: dict[str, str], shared: str | None, local: bool
) -> None:
    settings = load_settings(**fields)
    assert (settings.resilience_redis, settings.resilience_local) == (shared, local)
    settings.require_resilience_store()  # every one of these may start a worker


def test_an_empty_resilience_store_with_amqp_is_refused_as_unset() -> None:
    settings = load_settings(broker_url=AMQP_URL, resilience_redis_url="")
    with pytest.raises(ConfigError) as refused:
        settings.require_resilience_store()
    assert refused.value.field == "TIERFLOW_RESILIENCE_REDIS_URL"
    assert "redis://" in refused.value.reason and "local" in refused.value.reason
