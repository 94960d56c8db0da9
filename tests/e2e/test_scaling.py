"""Scaling one tier: two small-tier workers share its queue, and no worker strays from its queues.

Started as an operator scales a tier by hand (`docker compose up --scale worker-small=2`
does the same with one node name per container): two `tierflow worker --tier small`
processes with node names of their own, and one worker for each other queue.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.e2e.compose_runner import HOST, attempts_of, submit_jobs, truncate_store, wait_terminal
from tests.e2e.conftest import Processes, wait_for_workers
from tierflow.worker.app import TierflowCelery

pytestmark = pytest.mark.e2e

BATCH_SIZE = 90
BATCH_TIMEOUT_S = 150.0

# process name -> (`tierflow` arguments, node name, queues it serves)
TOPOLOGY: dict[str, tuple[list[str], str, tuple[str, ...]]] = {
    "classify": (["worker", "--queues", "classify", "--hostname", "classify@%h"], "classify", ("classify",)),
    "small-a": (
        ["worker", "--tier", "small", "--concurrency", "4", "--hostname", "small-a@%h"],
        "small-a",
        ("tier.small",),
    ),
    "small-b": (
        ["worker", "--tier", "small", "--concurrency", "4", "--hostname", "small-b@%h"],
        "small-b",
        ("tier.small",),
    ),
    "medium": (
        ["worker", "--tier", "medium", "--concurrency", "4", "--hostname", "medium@%h"],
        "medium",
        ("tier.medium",),
    ),
    "large": (
        ["worker", "--tier", "large", "--concurrency", "4", "--hostname", "large@%h"],
        "large",
        ("tier.large",),
    ),
    "maintenance": (
        ["worker", "--queues", "maintenance", "--concurrency", "1", "--hostname", "maintenance@%h"],
        "maintenance",
        ("maintenance",),
    ),
}
SERVES = {f"{node}@{HOST}": queues for _, node, queues in TOPOLOGY.values()}


@pytest.mark.timeout(300)
def test_two_small_tier_workers_share_the_tier_and_no_worker_leaves_its_queues(
    processes: Processes, control_app: TierflowCelery, store_engine: Engine, tmp_path: Path
) -> None:
    processes.run("db", "upgrade")
    truncate_store(store_engine)
    for name, (args, _, _) in TOPOLOGY.items():
        processes.start(name, *args)
    wait_for_workers(control_app, processes, set(SERVES))

    batch_id = submit_jobs(processes, tmp_path / "batch.jsonl", 11, BATCH_SIZE)
    wait_terminal(store_engine, processes, batch_id, BATCH_SIZE, BATCH_TIMEOUT_S)

    attempts = attempts_of(store_engine, batch_id)
    strays = [a for a in attempts if a.worker not in SERVES or a.queue not in SERVES[a.worker]]
    assert not strays, f"attempts run by a worker that does not serve their queue: {strays[:5]}"
    assert all(a.queue == f"tier.{a.tier}" for a in attempts)
    by_worker = Counter(a.worker for a in attempts)
    small = {f"small-a@{HOST}", f"small-b@{HOST}"}
    assert small <= set(by_worker), f"a small-tier worker took no work: {dict(by_worker)}"
    assert {f"medium@{HOST}", f"large@{HOST}"} <= set(by_worker), dict(by_worker)
    print(f"\n[scaling] attempts per worker: {dict(by_worker)}", flush=True)
