"""Worker processes started as a user starts them: two batches, one with a worker killed mid-batch.

The topology is the one of ARCHITECTURE.md: a classify worker, one worker per tier
(threads pool), a maintenance worker and beat, each a `tierflow` process. The
second batch loses its small-tier worker to SIGKILL while that worker holds
unacknowledged messages; Redis would hand them back only after its visibility
timeout (an hour), so the batch finishing within minutes shows the recovery is
reconcile's, from the store.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select

from tests.e2e.conftest import WORKERS, Processes, answering_workers, child_pids
from tierflow.store.models import Attempt, Job, Result, utcnow
from tierflow.worker.app import TierflowCelery

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = ("support.jsonl", "documents.jsonl", "prompts.jsonl")
TERMINAL = ("succeeded", "needs_review", "failed")
BATCH_SIZE = 200
BATCH_TIMEOUT_S = 180.0
KILLED_BATCH_TIMEOUT_S = 240.0
KILL_AFTER_TERMINAL = 20  # kill once this many jobs of batch 2 are terminal ...
KILL_BEFORE_SHARE = 0.6  # ... and before this share of them is ...
# ... at a moment the small-tier worker holds this many attempts: classify fans attempt 1 out
# itself, so the classify worker feeds the tiers as fast as it classifies and they hold a few at once
KILL_WHEN_HELD = 3
KILL_WAIT_S = 90.0
RESTART_PAUSE_S = 2.0
# At the default settings (a 30 s lease), a killed worker's jobs run again within a minute.
RESUME_WITHIN_S = 60.0


@dataclass(frozen=True)
class Interrupted:
    """What the killed worker held unacknowledged: Redis returns it only after the visibility timeout."""

    held: dict[str, tuple[str, str]]  # delivery tag -> (task name, job id)

    @property
    def job_ids(self) -> set[str]:
        return {job_id for _, job_id in self.held.values()}

    @property
    def tasks(self) -> dict[str, int]:
        return dict(Counter(task for task, _ in self.held.values()))


def varied_jobs(batch: int | str, count: int) -> list[dict[str, Any]]:
    """`count` jobs cycled from the examples, each with a new id and text of its own."""
    examples = [
        json.loads(line)
        for name in EXAMPLE_FILES
        for line in (EXAMPLES / name).read_text(encoding="utf-8").split("\n")
        if line.strip()
    ]
    jobs = []
    for number in range(count):
        job = copy.deepcopy(examples[number % len(examples)])
        job["id"] = f"e2e-b{batch}-{number:03d}-{job['id']}"
        text_field = "prompt" if job["kind"] == "prompt" else "text"
        job["payload"][text_field] += f"\n(e2e batch {batch}, copy {number // len(examples) + 1})"
        jobs.append(job)
    return jobs


def submit_batch(processes: Processes, path: Path, jobs: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    report = json.loads(processes.run("submit", str(path), "--json").stdout)
    assert report["accepted"] == len(jobs) and not report["rejected"] and not report["duplicates"], report
    return str(report["batch_id"])


def job_states(engine: Engine, batch_id: str) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(select(Job.id, Job.state).where(Job.batch_id == batch_id)).all())


def job_positions(engine: Engine, batch_id: str) -> dict[str, tuple[str, str | None]]:
    """Each job's (state, tier)."""
    query = select(Job.id, Job.state, Job.tier).where(Job.batch_id == batch_id)
    with engine.connect() as connection:
        return {job_id: (state, tier) for job_id, state, tier in connection.execute(query)}


def terminal_count(engine: Engine, batch_id: str) -> int:
    query = select(func.count()).where(Job.batch_id == batch_id, Job.state.in_(TERMINAL))
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def wait_all_terminal(engine: Engine, processes: Processes, batch_id: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        processes.check_alive()
        if terminal_count(engine, batch_id) == BATCH_SIZE:
            return
        time.sleep(0.1)
    states = Counter(job_states(engine, batch_id).values())
    pytest.fail(f"batch {batch_id} not terminal in time: {dict(states)}")


def check_batch_records(engine: Engine, batch_id: str) -> dict[str, Any]:
    """Assert one result per job and attempts on their tier's queue and worker; return the counts."""
    with engine.connect() as connection:
        jobs = connection.execute(select(Job.id, Job.redeliveries).where(Job.batch_id == batch_id)).all()
        result_ids = connection.execute(
            select(Result.job_id).join(Job, Job.id == Result.job_id).where(Job.batch_id == batch_id)
        ).scalars()
        attempts = connection.execute(
            select(Attempt.tier, Attempt.queue, Attempt.worker, Attempt.state)
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.batch_id == batch_id)
        ).all()
    result_ids = list(result_ids)
    assert len(result_ids) == BATCH_SIZE and set(result_ids) == {job.id for job in jobs}
    wrong_queue = [a for a in attempts if a.queue != f"tier.{a.tier}"]
    assert not wrong_queue, f"attempts outside their tier's queue: {wrong_queue[:5]}"
    wrong_worker = [a for a in attempts if a.worker != WORKERS[a.tier][1]]
    assert not wrong_worker, f"attempts run by another tier's worker: {wrong_worker[:5]}"
    assert all(a.state == "judged" for a in attempts)
    by_tier = Counter(a.tier for a in attempts)
    assert {"small", "medium", "large"} <= set(by_tier), f"some tier ran no attempt: {dict(by_tier)}"
    return {
        "attempts_by_tier": dict(by_tier),
        "redelivered_jobs": sum(1 for job in jobs if job.redeliveries > 0),
    }


def held_by_small_tier(broker: redis.Redis) -> dict[str, tuple[str, str]]:
    """Unacknowledged tier.small messages in Redis, by delivery tag: (task name, job id)."""
    held = {}
    for tag, raw in broker.hgetall("unacked").items():
        message, _exchange, routing_key = json.loads(raw)
        if routing_key != "tier.small":
            continue
        args = json.loads(base64.b64decode(message["body"]))[0]
        task = message["headers"]["task"]
        job_id = args[0] if task != "tierflow.aggregate" else args[1]
        held[tag.decode()] = (task, job_id)
    return held


def running_on_small(engine: Engine, batch_id: str) -> set[str]:
    """Unfinished jobs of the batch whose attempt runs on the small tier's queue, not yet judged:
    the small-tier worker, the only one on that queue, holds them (an attempt names the worker
    that judged it, so a running one fanned out by classify or an escalation names none yet)."""
    query = (
        select(Job.id)
        .join(Attempt, (Attempt.job_id == Job.id) & (Attempt.number == Job.attempt))
        .where(
            Job.batch_id == batch_id,
            Job.state.not_in(TERMINAL),
            Attempt.state == "running",
            Attempt.queue == "tier.small",
        )
    )
    with engine.connect() as connection:
        return set(connection.execute(query).scalars())


def wait_until_mid_batch(engine: Engine, batch_id: str, processes: Processes) -> None:
    """Until enough jobs are terminal, while the small-tier worker is running jobs of this batch."""
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        assert time.monotonic() < deadline, f"no moment to kill the small-tier worker in {KILL_WAIT_S:.0f}s"
        processes.check_alive()
        done = terminal_count(engine, batch_id)
        assert done < KILL_BEFORE_SHARE * BATCH_SIZE, f"{done} jobs terminal before a mid-batch kill"
        if done >= KILL_AFTER_TERMINAL and len(running_on_small(engine, batch_id)) >= KILL_WHEN_HELD:
            return
        time.sleep(0.02)


def kill_small_worker(processes: Processes, broker: redis.Redis | None) -> Interrupted:
    worker = processes.running["small"].popen
    assert child_pids(worker.pid) == [], "the threads pool worker should be one process"
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(timeout=10) == -signal.SIGKILL
    processes.forget("small")
    return Interrupted(held_by_small_tier(broker) if broker is not None else {})


def restart_small_worker(processes: Processes, app: TierflowCelery) -> None:
    args, node = WORKERS["small"]
    processes.start("small", *args)
    deadline = time.monotonic() + 60
    while node not in answering_workers(app):
        processes.check_alive()
        assert time.monotonic() < deadline, f"{node} did not come back:\n{processes.tails()}"


def wait_resumed(engine: Engine, job_ids: set[str], killed: datetime, within_s: float) -> float:
    """Seconds until every job the killed worker held is running again (a new start of its attempt
    after the kill, or a later state); fails past `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        with engine.connect() as connection:
            restarted = set(
                connection.execute(
                    select(Attempt.job_id).where(Attempt.job_id.in_(job_ids), Attempt.started_at > killed)
                ).scalars()
            )
            finished = set(
                connection.execute(
                    select(Job.id).where(Job.id.in_(job_ids), Job.state.in_(TERMINAL))
                ).scalars()
            )
        waiting = job_ids - restarted - finished
        if not waiting:
            return round((utcnow() - killed).total_seconds(), 1)
        assert time.monotonic() < deadline, (
            f"not running again {within_s:.0f}s after the kill: {sorted(waiting)}"
        )
        time.sleep(0.2)


def report_figures(tmp_path: Path, name: str, figures: dict[str, Any], detail: Any = None) -> None:
    """Print the figures and record them, with any detail, in tmp_path/figures.json."""
    path = tmp_path / "figures.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded[name] = figures if detail is None else {**figures, "detail": detail}
    path.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"\n[e2e figures] {name}: {json.dumps(figures)}", flush=True)


def run_batch_1(cluster: Processes, engine: Engine, tmp_path: Path) -> None:
    started = time.monotonic()
    batch_id = submit_batch(
        cluster, tmp_path / "batch1.jsonl", varied_jobs(f"1{uuid.uuid4().hex[:6]}", BATCH_SIZE)
    )
    wait_all_terminal(engine, cluster, batch_id, started + BATCH_TIMEOUT_S)
    elapsed = time.monotonic() - started
    counts = check_batch_records(engine, batch_id)
    states = Counter(job_states(engine, batch_id).values())
    report_figures(
        tmp_path,
        "batch1",
        {"jobs": BATCH_SIZE, "seconds": round(elapsed, 2), "jobs_per_s": round(BATCH_SIZE / elapsed, 2)}
        | {"states": dict(states)}
        | counts,
    )


def run_batch_2_with_kill(
    cluster: Processes, engine: Engine, app: TierflowCelery, broker: redis.Redis | None, tmp_path: Path
) -> None:
    """Kill the small-tier worker mid-batch. On Redis its unacknowledged messages come back only after
    the visibility timeout (an hour), so the leases are what resume its jobs; RabbitMQ hands them
    back at once. Either way they run again within a minute, at the default settings."""
    started = time.monotonic()
    batch_id = submit_batch(
        cluster, tmp_path / "batch2.jsonl", varied_jobs(f"2{uuid.uuid4().hex[:6]}", BATCH_SIZE)
    )
    wait_until_mid_batch(engine, batch_id, cluster)
    killed_wall = utcnow()
    running = running_on_small(engine, batch_id)
    interrupted = kill_small_worker(cluster, broker)
    at_kill = job_positions(engine, batch_id)
    killed_at = time.monotonic() - started
    time.sleep(RESTART_PAUSE_S)
    restart_small_worker(cluster, app)
    unfinished = {j for j in running if at_kill[j][0] not in TERMINAL}
    resumed_after_s = wait_resumed(engine, unfinished, killed_wall, RESUME_WITHIN_S)
    wait_all_terminal(engine, cluster, batch_id, started + KILLED_BATCH_TIMEOUT_S)
    elapsed = time.monotonic() - started

    terminal_at_kill = sum(1 for state, _ in at_kill.values() if state in TERMINAL)
    assert terminal_at_kill < BATCH_SIZE
    counts = check_batch_records(engine, batch_id)
    figures: dict[str, Any] = {
        "jobs": BATCH_SIZE,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(BATCH_SIZE / elapsed, 2),
        "killed_at_s": round(killed_at, 2),
        "running_on_killed_worker": len(running),
        "running_again_after_s": resumed_after_s,
        "terminal_at_kill": terminal_at_kill,
        "states": dict(Counter(job_states(engine, batch_id).values())),
    } | counts
    detail = None
    if broker is not None:
        recovery = check_interrupted_jobs_were_resent(engine, broker, interrupted, at_kill)
        figures |= recovery.pop("figures")
        detail = recovery["detail"]
    report_figures(tmp_path, "batch2", figures, detail=detail)


def check_interrupted_jobs_were_resent(
    engine: Engine, broker: redis.Redis, interrupted: Interrupted, at_kill: dict[str, tuple[str, str | None]]
) -> dict[str, Any]:
    """Assert that some job still on the small tier when its worker died was re-sent by reconcile.

    A held message is not always unfinished work: a task may have committed (and sent
    its successor) just before the kill, without its ack reaching Redis.
    """
    with engine.connect() as connection:
        redeliveries = dict(
            connection.execute(select(Job.id, Job.redeliveries).where(Job.id.in_(interrupted.job_ids))).all()
        )
    on_small = {j for j in interrupted.job_ids if j in at_kill and at_kill[j][0] not in TERMINAL}
    on_small = {j for j in on_small if at_kill[j][1] == "small"}
    assert on_small, f"the kill interrupted no unfinished small-tier job: {interrupted.held}"
    resent = {j for j in on_small if redeliveries[j] > 0}
    assert resent, f"no interrupted job was re-sent by reconcile: {sorted(on_small)}"
    figures = {
        "messages_held_by_killed_worker": interrupted.tasks,
        "interrupted_small_tier_jobs": len(on_small),
        "interrupted_jobs_redelivered": len(resent),
        "held_messages_still_unacked_in_redis": sum(broker.hexists("unacked", t) for t in interrupted.held),
    }
    detail = [
        {
            "task": task,
            "job": job_id,
            "at_kill": at_kill.get(job_id),
            "redeliveries": redeliveries.get(job_id),
        }
        for task, job_id in interrupted.held.values()
    ]
    return {"figures": figures, "detail": detail}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("broker_url", ["redis", "amqp"], indirect=True)
def test_batches_finish_with_one_result_per_job_even_when_a_tier_worker_is_killed(
    cluster: Processes, store_engine: Engine, control_app: TierflowCelery, broker_url: str, tmp_path: Path
) -> None:
    broker = redis.Redis.from_url(broker_url) if broker_url.startswith("redis://") else None
    try:
        run_batch_1(cluster, store_engine, tmp_path)
        run_batch_2_with_kill(cluster, store_engine, control_app, broker, tmp_path)
    finally:
        if broker is not None:
            broker.close()
