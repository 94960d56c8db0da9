"""Messages lost from a queue that never drains are found and sent again, on Redis and RabbitMQ.

Worker processes at the default settings; a feeder keeps the classification queue (the one it
fills) above a floor for the whole test, submitting more whenever the workers bring it down. A
few messages are taken off the head of that queue and dropped (what a broker that loses
messages does). Their jobs must run again while the queue is still busy: reconcile sees younger
messages of the same queue delivered and knows the older ones are gone, without waiting for the
queue to empty.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Queue
from kombu.exceptions import ChannelError
from sqlalchemy import Engine, select

from tests.e2e.conftest import Processes
from tests.e2e.test_workers import TERMINAL, varied_jobs
from tierflow.store.models import Job, Result
from tierflow.tasks.leases import job_of
from tierflow.tasks.runtime import runtime_for
from tierflow.tasks.submission import submit_file
from tierflow.worker.app import TierflowCelery

# mostly waiting (on a slow model, on the reconciler's cycles): `make test` runs it beside the rest
pytestmark = [pytest.mark.e2e, pytest.mark.waits]

FEED_BATCH = 40
FEED_FLOOR = 120  # the feeder submits another batch whenever the queue is shorter than this
FEED_MAX_S = 150.0  # the feeder stops by itself after this long at the latest
BACKLOG = 40  # drop once the queue holds this many messages
DROPPED = 5
RESENT_WITHIN_S = 90.0
RESULTS_WITHIN_S = 180.0  # the backlog behind the resent jobs drains first
QUEUE = "classify"


class Feeder(threading.Thread):
    """Keeps QUEUE at FEED_FLOOR messages or more: a batch of FEED_BATCH new jobs each time it
    is shorter, until stopped (or FEED_MAX_S). An open-loop feed left the queue to drain in
    whichever stretch the workers ran faster than the feed."""

    def __init__(self, app: TierflowCelery, folder: Path, broker_url: str) -> None:
        super().__init__(daemon=True)
        self.app, self.folder, self.broker_url = app, folder, broker_url
        self.stop = threading.Event()
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        runtime = runtime_for(self.app)
        deadline = time.monotonic() + FEED_MAX_S
        try:
            with Connection(self.broker_url) as connection:  # its own: a connection is one thread's
                while not self.stop.is_set() and time.monotonic() < deadline:
                    if queue_length(connection, QUEUE) >= FEED_FLOOR:
                        self.stop.wait(0.05)
                        continue
                    self.batches += 1
                    path = self.folder / f"feed-{self.batches}.jsonl"
                    jobs = varied_jobs(f"f{uuid.uuid4().hex[:8]}", FEED_BATCH)
                    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
                    submit_file(self.app, runtime, path)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def queue_length(connection: Connection, name: str) -> int:
    try:
        return int(connection.default_channel.queue_declare(queue=name, passive=True).message_count)
    except ChannelError:  # Redis: an empty list does not exist
        return 0


def drop_from_head(connection: Connection, name: str, count: int) -> list[str]:
    """Take `count` messages off the head of the queue and throw them away; their job ids."""
    dropped = []
    queue = Queue(name, no_declare=True).bind(connection.default_channel)
    for _ in range(count):
        message = queue.get(no_ack=True)
        assert message is not None, f"{name} ran empty"
        args = message.decode()[0]
        job_id = job_of(message.headers["task"], args)
        assert job_id is not None, message.headers["task"]
        dropped.append(job_id)
    return dropped


def wait_for_backlog(connection: Connection, processes: Processes, feeder: Feeder) -> None:
    """Until QUEUE holds BACKLOG messages or more, three looks in a row."""
    deadline = time.monotonic() + 90
    seen: list[int] = []
    while time.monotonic() < deadline:
        processes.check_alive()
        assert feeder.error is None, feeder.error
        seen = [*seen[-2:], queue_length(connection, QUEUE)]
        if len(seen) == 3 and min(seen) >= BACKLOG:
            return
        time.sleep(0.5)
    pytest.fail(f"no backlog of {BACKLOG} in {QUEUE} in 90 s: {seen}")


def wait_resent(
    engine: Engine, connection: Connection, job_ids: list[str], processes: Processes
) -> dict[str, Any]:
    """Until every dropped job was sent again (or finished); QUEUE's length all along."""
    started = time.monotonic()
    lengths = []
    while True:
        processes.check_alive()
        lengths.append(queue_length(connection, QUEUE))
        with engine.connect() as c:
            rows = c.execute(select(Job.id, Job.state, Job.redeliveries).where(Job.id.in_(job_ids))).all()
        moved = [r for r in rows if r.redeliveries > 0 or r.state in TERMINAL]
        if len(moved) == len(job_ids):
            return {"seconds": round(time.monotonic() - started, 1), "queue_min": min(lengths)}
        assert time.monotonic() - started < RESENT_WITHIN_S, f"not sent again in time: {rows}"
        time.sleep(0.2)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("broker_url", ["redis", "amqp"], indirect=True)
def test_messages_lost_from_a_queue_that_never_drains_are_sent_again(
    cluster: Processes, store_engine: Engine, control_app: TierflowCelery, broker_url: str, tmp_path: Path
) -> None:
    feeder = Feeder(control_app, tmp_path, broker_url)
    feeder.start()
    try:
        with Connection(broker_url) as connection:
            wait_for_backlog(connection, cluster, feeder)
            dropped = drop_from_head(connection, QUEUE, DROPPED)
            figures = wait_resent(store_engine, connection, dropped, cluster)
            busy_after = queue_length(connection, QUEUE)
    finally:
        feeder.stop.set()
        feeder.join(timeout=30)
    assert feeder.error is None, feeder.error
    assert len(set(dropped)) == DROPPED, dropped  # a classification message per job
    assert figures["queue_min"] > 0 and busy_after > 0, f"{QUEUE} drained: the test proves nothing {figures}"
    figures["jobs_fed"] = feeder.batches * FEED_BATCH
    waited_from = time.monotonic()
    while time.monotonic() - waited_from < RESULTS_WITHIN_S:
        with store_engine.connect() as c:
            done = c.execute(select(Result.job_id).where(Result.job_id.in_(dropped))).scalars().all()
        if len(done) == len(dropped):
            break
        time.sleep(0.5)
    figures["results_s"] = round(time.monotonic() - waited_from, 1)
    assert sorted(done) == sorted(dropped), "each dropped job ends with exactly one result"
    print(f"\n[e2e figures] lost messages ({broker_url.split(':')[0]}): {QUEUE} {figures}", flush=True)
