"""A tier worker killed while the children of several parents run on it: every parent still ends
with exactly one merged result.

The topology and settings of test_workers.py (a classify worker, one threads worker per tier, a
maintenance worker and beat; the default 30 s lease and 10 s reconcile), but for fake models slow
enough that a child's model call is in flight when its worker dies. A batch of support tickets
that each ask several things (each becomes a parent with one child per ask) and a few that ask
one thing is submitted; once one tier worker runs children of at least two parents, it gets
SIGKILL and a replacement is started. On Redis the killed worker's unacknowledged messages come
back only after the visibility timeout (an hour), so the batch ending within minutes shows that
reconcile re-sent the interrupted children, and that the transaction ending each parent's last
child (or the reconciler's sweep) merged every parent once.
"""

from __future__ import annotations

import base64
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
from tests.e2e.test_workers import TERMINAL, report_figures, submit_batch
from tierflow.store.models import Attempt, Job, Result, utcnow
from tierflow.tasks.leases import job_of
from tierflow.worker.app import TierflowCelery

pytestmark = pytest.mark.e2e

# Fake model calls of 1.2 s (small), 3.6 s (medium) and 9 s (large): a child is still in its
# model call when its worker dies. Recovery runs at the defaults (lease, reconcile, stage timeout).
LATENCY_SCALE = "60"
TIERS = ("small", "medium", "large")
KILL_WHEN_CHILDREN = 3  # kill once one tier worker runs this many children ...
KILL_WHEN_PARENTS = 2  # ... of at least this many parents
KILL_WAIT_S = 60.0
RESTART_PAUSE_S = 2.0
# A 30 s lease, reconcile every 10 s, then the rest of the batch at the slow models' pace.
ALL_TERMINAL_WITHIN_S = 150.0

# Tickets written for this test: each item or "Also, ..." / "Separately, ..." sentence is an ask.
MULTI_ASK = {
    "lamp": (
        "I ordered a desk lamp last Tuesday and it arrived with a cracked shade, I would like a "
        "replacement sent out. Also, I was billed for express shipping even though I picked standard "
        "delivery at checkout. Thanks, Rosa"
    ),
    "sms": (
        "My two-factor codes stopped arriving by text message, so I cannot sign in to my account at all. "
        "Separately, please cancel the monthly plan that is still running on my old email address."
    ),
    "april": (
        "Hello,\n"
        "1. My April invoice shows a charge of 19.99 that I do not recognise, please explain or refund it.\n"
        "2. The mobile app freezes on the sign-in screen since the latest update.\n"
        "3. Can you change the delivery address on order KT-8830 to my office?\n"
        "Regards, Priya"
    ),
    "export": (
        "Hi team,\n"
        "1. The export to CSV button gives an error 500 every time I press it.\n"
        "2. How do I add a second user to our team account without paying for another seat?\n"
        "Thanks"
    ),
    "lyon": (
        "Our parcel to Lyon shows as delivered but nobody here received it, can you open a claim with "
        "the courier? Also, the discount code SPRING15 was not applied at checkout and I paid the full "
        "price. Separately, the password reset email never shows up in my inbox."
    ),
    "jacket": (
        "The website keeps logging me out every few minutes while I browse the catalogue. Also, I want "
        "to return the blue jacket from my last order because it is two sizes too small."
    ),
    "renewal": (
        "Two things:\n"
        "- My subscription renewed in June although I cancelled it back in January, I want that money back.\n"
        "- The tracking link in the dispatch email leads to a blank page, so I cannot see where the box is."
    ),
    "kettle": (
        "The kettle I bought has stopped heating and the light just blinks red. Separately, my loyalty "
        "points from the March order never appeared on my account page. Also, could you tell me when "
        "the larger teapot is back in stock?"
    ),
    # an ask a person must handle (closing an account) beside one a model answers: held for review
    "close": (
        "Hi,\n"
        "1. Please close my account and remove my saved card details, I am moving abroad next month.\n"
        "2. Before you do that, can you email me the invoice for my last order NW-61870?\n"
        "Thanks, Tomas"
    ),
    "zip": (
        "The zip on the rain jacket I bought broke after two walks, I would like it repaired or replaced. "
        "Separately, please delete my account for the old newsletter address mark.old@example.org."
    ),
}
SINGLE_ASK = {
    "late": "Where is my order 7781? It was due on Friday and the tracking page has not moved since Monday.",
    "reset": "I cannot reset my password, the link in the email says it has expired every time I click it.",
    "twice": "I was charged twice for the same order last week, please refund one of the two charges.",
}


@pytest.fixture()
def processes(processes: Processes) -> Processes:
    """The e2e processes (the `cluster` fixture starts them), with slower fake models."""
    processes.env["TIERFLOW_FAKE_LATENCY_SCALE"] = LATENCY_SCALE
    return processes


@dataclass(frozen=True)
class Kill:
    """The tier worker killed, when, the children it was running and the messages it held."""

    tier: str
    at: datetime
    running: dict[str, str]  # child id -> parent id
    held: list[tuple[str, str]]  # (task name, job id) unacknowledged in Redis


def tickets(run: str) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The batch's jobs, its multi-ask ids and its single-ask ids."""
    multi = {f"dk-{run}-{name}": text for name, text in MULTI_ASK.items()}
    single = {f"dk-{run}-{name}": text for name, text in SINGLE_ASK.items()}
    jobs = [
        {"id": job_id, "kind": "support", "payload": {"text": text, "customer": "e2e"}}
        for job_id, text in {**multi, **single}.items()
    ]
    return jobs, list(multi), list(single)


def running_children(engine: Engine, batch_id: str) -> dict[str, dict[str, str]]:
    """By tier: the unfinished children whose current attempt runs on that tier's queue, not yet
    judged (child id -> parent id). The tier's worker, the only one on its queue, holds them (an
    attempt fanned out by classify or an escalation names its worker only once judged)."""
    query = (
        select(Attempt.queue, Job.id, Job.parent_id)
        .join(Attempt, (Attempt.job_id == Job.id) & (Attempt.number == Job.attempt))
        .where(
            Job.batch_id == batch_id,
            Job.parent_id.is_not(None),
            Job.state.not_in(TERMINAL),
            Attempt.state == "running",
        )
    )
    found: dict[str, dict[str, str]] = {tier: {} for tier in TIERS}
    with engine.connect() as connection:
        for queue, job_id, parent_id in connection.execute(query):
            tier = (queue or "").removeprefix("tier.")
            if tier in found:
                found[tier][job_id] = parent_id
    return found


def wait_for_busy_tier(engine: Engine, batch_id: str, processes: Processes) -> str:
    """The tier whose worker runs at least KILL_WHEN_CHILDREN children of KILL_WHEN_PARENTS parents."""
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        processes.check_alive()
        by_tier = running_children(engine, batch_id)
        busy = {
            tier: len(running)
            for tier, running in by_tier.items()
            if len(running) >= KILL_WHEN_CHILDREN and len(set(running.values())) >= KILL_WHEN_PARENTS
        }
        if busy:
            return max(busy, key=lambda tier: busy[tier])
        assert time.monotonic() < deadline, f"no tier ran children of several parents in {KILL_WAIT_S:.0f}s"
        time.sleep(0.05)


def held_on_queue(broker: redis.Redis, queue: str) -> list[tuple[str, str]]:
    """Unacknowledged messages of one queue in Redis: (task name, job id)."""
    held = []
    for raw in broker.hgetall("unacked").values():
        message, _exchange, routing_key = json.loads(raw)
        if routing_key != queue:
            continue
        task = message["headers"]["task"]
        job_id = job_of(task, json.loads(base64.b64decode(message["body"]))[0])
        held.append((task, job_id or "?"))
    return held


def kill_tier_worker(
    processes: Processes, engine: Engine, broker: redis.Redis, batch_id: str, tier: str
) -> Kill:
    worker = processes.running[tier].popen
    assert child_pids(worker.pid) == [], "the threads pool worker should be one process"
    at = utcnow()
    running = running_children(engine, batch_id)[tier]
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(timeout=10) == -signal.SIGKILL
    processes.forget(tier)
    return Kill(tier, at, running, held_on_queue(broker, f"tier.{tier}"))


def restart_worker(processes: Processes, app: TierflowCelery, name: str) -> None:
    args, node = WORKERS[name]
    processes.start(name, *args)
    deadline = time.monotonic() + 60
    while node not in answering_workers(app):
        processes.check_alive()
        assert time.monotonic() < deadline, f"{node} did not come back:\n{processes.tails()}"


def wait_all_terminal(engine: Engine, processes: Processes, batch_id: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    query = select(Job.id, Job.state).where(Job.batch_id == batch_id)
    while True:
        processes.check_alive()
        with engine.connect() as connection:
            states = dict(connection.execute(query).all())
        open_jobs = {job_id: state for job_id, state in states.items() if state not in TERMINAL}
        if not open_jobs:
            return
        assert time.monotonic() < deadline, f"not terminal {within_s:.0f}s after the kill: {open_jobs}"
        time.sleep(0.2)


def batch_records(engine: Engine, batch_id: str) -> tuple[list[Any], dict[str, int], list[Any]]:
    """The batch's jobs, its results per job and its attempts."""
    with engine.connect() as connection:
        jobs = connection.execute(
            select(Job.id, Job.parent_id, Job.state, Job.meta.label("meta"), Job.analysis).where(
                Job.batch_id == batch_id
            )
        ).all()
        results = dict(
            connection.execute(
                select(Result.job_id, func.count())
                .join(Job, Job.id == Result.job_id)
                .where(Job.batch_id == batch_id)
                .group_by(Result.job_id)
            ).all()
        )
        attempts = connection.execute(
            select(Attempt.job_id, Attempt.number, Attempt.state, Attempt.started_at)
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.batch_id == batch_id)
        ).all()
    return list(jobs), results, list(attempts)


def result_output(engine: Engine, job_id: str) -> dict[str, Any]:
    with engine.connect() as connection:
        output = connection.execute(select(Result.output).where(Result.job_id == job_id)).scalar_one()
    assert isinstance(output, dict), f"{job_id}: no output in its result"
    return output


def expected_parent_state(child_states: list[str]) -> str:
    """A concatenated merge's verdict: accepted only when every part was, failed when every part
    failed, else held for a person."""
    if all(state == "succeeded" for state in child_states):
        return "succeeded"
    if all(state == "failed" for state in child_states):
        return "failed"
    return "needs_review"


def check_families(engine: Engine, batch_id: str, multi: list[str], single: list[str]) -> dict[str, Any]:
    """Assert one result per job, every attempt judged, and each parent merged once from exactly its
    children; return the counts."""
    jobs, results, attempts = batch_records(engine, batch_id)
    by_id = {job.id: job for job in jobs}
    children: dict[str, list[Any]] = {}
    for job in jobs:
        if job.parent_id is not None:
            children.setdefault(job.parent_id, []).append(job)
    assert set(children) == set(multi), f"parents {sorted(children)}, multi-ask tickets {sorted(multi)}"
    assert not set(single) & set(children), "a ticket that asks one thing is not split"
    assert set(by_id) == {*multi, *single, *(c.id for family in children.values() for c in family)}
    doubled_or_missing = {job_id: results.get(job_id, 0) for job_id in by_id if results.get(job_id) != 1}
    assert not doubled_or_missing, f"jobs without exactly one result: {doubled_or_missing}"
    open_jobs = {job.id: job.state for job in jobs if job.state not in TERMINAL}
    assert not open_jobs, f"jobs left non-terminal: {open_jobs}"
    unjudged = [(a.job_id, a.number, a.state) for a in attempts if a.state != "judged"]
    assert not unjudged, f"attempts not judged: {unjudged}"
    for parent_id, family in children.items():
        check_parent(engine, by_id[parent_id], family, attempts)
    return {
        "parents": len(children),
        "children": sum(len(family) for family in children.values()),
        "single_ask": len(single),
        "states": dict(Counter(job.state for job in jobs)),
    }


def check_parent(engine: Engine, parent: Any, family: list[Any], attempts: list[Any]) -> None:
    family = sorted(family, key=lambda child: int(child.meta["part"]))
    ids = [child.id for child in family]
    asks = (parent.analysis or {}).get("split", {}).get("parts", [])
    assert len(ids) >= 2 and len(ids) == len(asks), f"{parent.id}: children {ids} for asks {asks}"
    assert ids == [f"{parent.id}~{n}" for n in range(1, len(ids) + 1)], ids
    merge_attempts = [(a.number, a.state) for a in attempts if a.job_id == parent.id]
    assert merge_attempts == [(1, "judged")], f"{parent.id}: merge attempts {merge_attempts}"
    output = result_output(engine, parent.id)
    assert [part["job_id"] for part in output["parts"]] == ids, f"{parent.id}: parts {output['parts']}"
    assert [part["state"] for part in output["parts"]] == [child.state for child in family]
    states = [child.state for child in family]
    assert parent.state == expected_parent_state(states), f"{parent.id} {parent.state}, children {states}"
    for child in family:
        reply = result_output(engine, child.id).get("reply") if child.state == "succeeded" else None
        assert reply is None or reply in output["reply"], f"{child.id}'s answer is a section of the merge"


def check_interrupted(engine: Engine, kill: Kill) -> dict[str, Any]:
    """Assert that the kill interrupted unfinished children and that reconcile re-sent some of them."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(Job.id, Job.redeliveries).where(Job.id.in_(sorted(kill.running)))
        ).all()
        restarted = set(
            connection.execute(
                select(Attempt.job_id).where(
                    Attempt.job_id.in_(sorted(kill.running)), Attempt.started_at > kill.at
                )
            ).scalars()
        )
    held_children = {job_id for _, job_id in kill.held if job_id in kill.running}
    assert held_children, f"the killed worker held no message of a running child: {kill.held}"
    resent = {job_id for job_id, redeliveries in rows if redeliveries > 0}
    assert resent, f"no child interrupted on {kill.tier} was re-sent by reconcile: {sorted(kill.running)}"
    return {
        "killed_tier": kill.tier,
        "children_running_on_killed_worker": len(kill.running),
        "their_parents": len(set(kill.running.values())),
        "messages_held_by_killed_worker": dict(Counter(task for task, _ in kill.held)),
        "interrupted_children_resent": len(resent),
        "interrupted_children_restarted": len(restarted),
    }


@pytest.mark.timeout(420)
def test_every_parent_ends_with_one_merged_result_when_a_tier_worker_is_killed_mid_family(
    cluster: Processes, store_engine: Engine, control_app: TierflowCelery, broker_url: str, tmp_path: Path
) -> None:
    broker = redis.Redis.from_url(broker_url)
    try:
        started = time.monotonic()
        jobs, multi, single = tickets(uuid.uuid4().hex[:6])
        batch_id = submit_batch(cluster, tmp_path / "tickets.jsonl", jobs)
        tier = wait_for_busy_tier(store_engine, batch_id, cluster)
        kill = kill_tier_worker(cluster, store_engine, broker, batch_id, tier)
        killed_at = time.monotonic() - started
        time.sleep(RESTART_PAUSE_S)
        restart_worker(cluster, control_app, tier)
        wait_all_terminal(store_engine, cluster, batch_id, ALL_TERMINAL_WITHIN_S)
        elapsed = time.monotonic() - started
    finally:
        broker.close()
    figures = check_families(store_engine, batch_id, multi, single)
    figures |= check_interrupted(store_engine, kill)
    figures |= {"killed_at_s": round(killed_at, 1), "seconds": round(elapsed, 1)}
    report_figures(tmp_path, "decomposition_kill", figures)
