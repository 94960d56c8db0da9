"""`tierflow flower` against the real Redis broker and running workers, through its HTTP API.

Flower is started as an operator starts it, with basic auth from TIERFLOW_FLOWER_USER
and TIERFLOW_FLOWER_PASSWORD. The queue lengths are watched while a batch waits for
tier workers that are not yet started (the backlog shows), then drains once they are.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from tests.e2e.compose_runner import (
    HOST,
    basic_auth_header,
    free_port,
    submit_jobs,
    truncate_store,
    wait_http,
    wait_terminal,
)
from tests.e2e.conftest import TIERFLOW, Processes, wait_for_workers
from tierflow.routing.errors import ConfigError
from tierflow.store.models import Attempt, Job
from tierflow.worker.app import ALL_QUEUES, TIER_QUEUES, TierflowCelery
from tierflow.worker.cli_flower import flower_argv
from tierflow.worker.settings import Settings

pytestmark = pytest.mark.e2e

USER, PASSWORD = "ops", "flower-test-password"
BATCH_SIZE = 60
TIMEOUT_S = 90.0

FRONT_WORKERS = {
    "classify": ["worker", "--queues", "classify", "--hostname", "classify@%h"],
    "maintenance": [
        "worker",
        "--queues",
        "maintenance",
        "--concurrency",
        "1",
        "--hostname",
        "maintenance@%h",
    ],
}
TIER_WORKERS = {
    tier: ["worker", "--tier", tier, "--concurrency", "4", "--hostname", f"{tier}@%h"]
    for tier in ("small", "medium", "large")
}
NODES = {f"{name}@{HOST}" for name in (*FRONT_WORKERS, *TIER_WORKERS)}


class FlowerClient:
    def __init__(self, port: int, auth: tuple[str, str] | None = (USER, PASSWORD)) -> None:
        self.base, self.auth = f"http://127.0.0.1:{port}", auth

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.base + path)  # noqa: S310 - loopback only
        if self.auth:
            request.add_header("Authorization", basic_auth_header(*self.auth))
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            return json.load(response)

    def queue_lengths(self) -> dict[str, int]:
        return {q["name"]: int(q["messages"]) for q in self.get("/api/queues/length")["active_queues"]}

    def workers(self) -> set[str]:
        return set(self.get("/api/workers?refresh=1"))


def start_flower(processes: Processes) -> FlowerClient:
    port = free_port()
    processes.env = processes.env | {"TIERFLOW_FLOWER_USER": USER, "TIERFLOW_FLOWER_PASSWORD": PASSWORD}
    processes.start("flower", "flower", "--port", str(port))
    wait_http(f"http://127.0.0.1:{port}/healthcheck", processes)
    return FlowerClient(port)


def wait_for(description: str, check: Any, processes: Processes, timeout_s: float = TIMEOUT_S) -> Any:
    """Poll `check()` until it returns something true; return it."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        processes.check_alive()
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{description} not seen in {timeout_s:.0f}s (last: {last})")


def backlog_on_tiers(flower: FlowerClient, engine: Engine, batch_id: str) -> dict[str, int] | None:
    """The queue lengths once every job is classified and its attempt's experts wait on its tier's
    queue (classify fans attempt 1 out: one message per expert), else None."""
    lengths = flower.queue_lengths()
    waiting = sum(lengths[queue] for queue in TIER_QUEUES)
    running = (
        select(Attempt.decision)
        .join(Job, Job.id == Attempt.job_id)
        .where(Job.batch_id == batch_id, Job.state == "running", Attempt.number == 1)
    )
    queued = select(func.count()).where(Job.batch_id == batch_id, Job.state == "queued")
    with engine.connect() as connection:
        experts = sum(len(decision["experts"]) for decision in connection.execute(running).scalars())
        unclassified = connection.execute(queued).scalar_one()
    return lengths if lengths["classify"] == 0 and unclassified == 0 and 0 < waiting == experts else None


@pytest.mark.timeout(300)
def test_flower_shows_the_workers_and_the_queues_filling_and_draining(
    processes: Processes, control_app: TierflowCelery, store_engine: Engine, tmp_path: Path
) -> None:
    processes.run("db", "upgrade")
    truncate_store(store_engine)
    for name, args in FRONT_WORKERS.items():
        processes.start(name, *args)
    flower = start_flower(processes)

    with pytest.raises(urllib.error.HTTPError) as refused:
        FlowerClient(int(flower.base.rsplit(":", 1)[1]), auth=None).get("/api/queues/length")
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        FlowerClient(int(flower.base.rsplit(":", 1)[1]), auth=(USER, "not-it")).get("/api/workers")
    assert wrong.value.code == 401
    idle = flower.queue_lengths()
    assert set(idle) == set(ALL_QUEUES) and not any(idle.values()), idle

    # No tier worker yet: the classified jobs pile up on the tier queues, and Flower shows it.
    batch_id = submit_jobs(processes, tmp_path / "batch.jsonl", 21, BATCH_SIZE)
    backlog = wait_for(
        "the classified jobs waiting on the tier queues",
        lambda: backlog_on_tiers(flower, store_engine, batch_id),
        processes,
    )
    assert sum(1 for queue in TIER_QUEUES if backlog[queue] > 0) >= 2, backlog

    for name, args in TIER_WORKERS.items():
        processes.start(name, *args)
    wait_for_workers(control_app, processes, NODES)
    wait_terminal(store_engine, processes, batch_id, BATCH_SIZE, TIMEOUT_S)
    drained = wait_for("empty queues", lambda: not any(flower.queue_lengths().values()), processes, 15)
    assert drained
    assert set(flower.queue_lengths()) == set(ALL_QUEUES)
    listed = wait_for("every worker in /api/workers", lambda: flower.workers() >= NODES, processes, 30)
    assert listed
    flower_process = processes.running["flower"]
    assert PASSWORD.encode() not in Path(f"/proc/{flower_process.popen.pid}/cmdline").read_bytes()
    processes.stop_all()
    for log in (flower_process.stdout, flower_process.stderr):
        assert PASSWORD not in log.read_text(errors="replace"), f"the password is in {log.name}"
    print(f"\n[flower] backlog seen before the tier workers started: {backlog}", flush=True)


@pytest.mark.parametrize("missing", ["TIERFLOW_FLOWER_USER", "TIERFLOW_FLOWER_PASSWORD"])
def test_flower_refuses_to_start_without_credentials(processes: Processes, missing: str) -> None:
    env = processes.env | {"TIERFLOW_FLOWER_USER": USER, "TIERFLOW_FLOWER_PASSWORD": PASSWORD}
    del env[missing]
    done = subprocess.run(  # noqa: S603 - our own console script
        [str(TIERFLOW), "flower", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: setting TIERFLOW_FLOWER_USER: Flower needs basic auth: set TIERFLOW_FLOWER_USER and "
        "TIERFLOW_FLOWER_PASSWORD (or pass --insecure to run it open)"
    ]
    assert PASSWORD not in done.stdout + done.stderr


def test_flower_starts_open_only_when_told_insecure(processes: Processes) -> None:
    port = free_port()
    processes.start("flower", "flower", "--port", str(port), "--insecure")
    wait_http(f"http://127.0.0.1:{port}/healthcheck", processes)
    # The web UI opens without credentials; Flower keeps its API closed unless FLOWER_UNAUTHENTICATED_API.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/workers", timeout=10) as page:  # noqa: S310
        assert page.status == 200


def test_flower_credentials_reach_flower_whole_and_only_as_its_basic_auth() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:6379/3", flower_user=USER, flower_password=PASSWORD)
    argv = flower_argv(settings, 5555, "127.0.0.1", insecure=False)
    assert [arg for arg in argv if PASSWORD in arg] == [f"--basic_auth={USER}:{PASSWORD}"]
    assert PASSWORD not in repr(settings)
    # Flower splits its basic_auth option on commas: "ops:a,b" would let anyone in as "b".
    with pytest.raises(ConfigError, match="TIERFLOW_FLOWER_PASSWORD"):
        flower_argv(settings.model_copy(update={"flower_password": SecretStr("a,b")}), 5555, "x", False)
    with pytest.raises(ConfigError, match="TIERFLOW_FLOWER_USER"):
        flower_argv(settings.model_copy(update={"flower_user": "o:ps"}), 5555, "x", False)
    assert flower_argv(Settings(), 5555, "127.0.0.1", insecure=True) == [
        "flower",
        "--port=5555",
        "--address=127.0.0.1",
    ]
