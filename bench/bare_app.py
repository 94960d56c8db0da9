"""Arm B of the throughput benchmark: the pipeline's shape in plain Celery, nothing of tierflow.

classify -> run_job on a tier queue -> chord(2 trivial experts) -> aggregate, which
writes one row to PostgreSQL. The Celery settings mirror tierflow's (explicit queues on
a direct exchange, JSON, late acks, prefetch 1, Redis result backend) so that the
difference between the arms is tierflow's own work, not a different Celery setup.

Arm C ("bare-durable", the `durable_*` tasks) runs tierflow's canvas instead: per job the
attempts (tier, number of experts) tierflow's run of the same repeat took, each expert
INSERTing its result before it returns and the last aggregate INSERTing the job's row:
what plain Celery needs not to lose work.

Workers: `celery -A bench.bare_app worker -Q classify --pool prefork ...`. The URLs come
from BENCH_BROKER_URL, BENCH_RESULT_BACKEND and BENCH_DATABASE_URL (a psycopg conninfo).
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from datetime import timedelta
from typing import Any

import psycopg
from celery import Celery, chord, group
from kombu import Exchange, Queue

TIERS = ("small", "medium", "large")
QUEUES = ("classify", *(f"tier.{tier}" for tier in TIERS))
EXPERTS = ("first", "second")
RESULTS_TABLE = "bench_bare_results"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {RESULTS_TABLE} (job_id text PRIMARY KEY, run text NOT NULL, "
    "tier text NOT NULL, verdict text NOT NULL, submitted_at double precision NOT NULL, "
    "finished_at double precision NOT NULL)"
)

_exchange = Exchange("bare", type="direct")
app = Celery("bare", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12"),
    result_backend=os.environ.get("BENCH_RESULT_BACKEND", "redis://127.0.0.1:6379/12"),
    task_queues=[Queue(name, _exchange, routing_key=name) for name in QUEUES],
    task_default_queue="classify",
    task_default_exchange="bare",
    task_default_routing_key="classify",
    task_create_missing_queues=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_deduplicate_successful_tasks=True,
    result_expires=timedelta(hours=24),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_local = threading.local()


def _connection() -> psycopg.Connection[Any]:
    """One autocommit connection per worker thread (and per process: made after the fork)."""
    connection = getattr(_local, "connection", None)
    if connection is None or connection.closed:
        connection = psycopg.connect(os.environ["BENCH_DATABASE_URL"], autocommit=True)
        _local.connection = connection
    return connection


def choose_tier(job_id: str, text: str) -> str:
    """A stand-in router: spread the jobs over the three tiers, longer texts upwards."""
    return TIERS[(zlib.crc32(job_id.encode()) + len(text) // 400) % len(TIERS)]


@app.task(name="bare.classify", ignore_result=True)
def classify(job_id: str, run: str, text: str, submitted_at: float) -> None:
    tier = choose_tier(job_id, text)
    app.send_task("bare.run_job", args=(job_id, run, tier, submitted_at), queue=f"tier.{tier}")


@app.task(name="bare.run_job", ignore_result=True)
def run_job(job_id: str, run: str, tier: str, submitted_at: float) -> None:
    queue = f"tier.{tier}"
    experts = group(app.signature("bare.expert", args=(job_id, name), queue=queue) for name in EXPERTS)
    callback = app.signature("bare.aggregate", args=(job_id, run, tier, submitted_at), queue=queue)
    chord(experts)(callback)


@app.task(name="bare.expert")
def expert(job_id: str, name: str) -> dict[str, Any]:
    return {"expert": name, "ok": True}


@app.task(name="bare.aggregate")
def aggregate(markers: list[dict[str, Any]], job_id: str, run: str, tier: str, submitted_at: float) -> str:
    verdict = "accept" if all(marker["ok"] for marker in markers) else "fail"
    _connection().execute(
        f"INSERT INTO {RESULTS_TABLE} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
        (job_id, run, tier, verdict, submitted_at, time.time()),
    )
    return verdict


# --- arm C, bare-durable: tierflow's canvas, each expert's result and the final result stored ---

EXPERTS_TABLE = "bench_bare_expert_results"
CREATE_EXPERTS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {EXPERTS_TABLE} (job_id text NOT NULL, attempt integer NOT NULL, "
    "expert integer NOT NULL, output text NOT NULL, PRIMARY KEY (job_id, attempt, expert))"
)
Plan = list[list[Any]]  # per attempt: [tier, number of experts], as tierflow's run took them


@app.task(name="bare.durable_classify", ignore_result=True)
def durable_classify(job_id: str, run: str, plan: Plan, submitted_at: float) -> None:
    tier = plan[0][0]
    app.send_task("bare.durable_run_job", args=(job_id, run, plan, 0, submitted_at), queue=f"tier.{tier}")


@app.task(name="bare.durable_run_job", ignore_result=True)
def durable_run_job(job_id: str, run: str, plan: Plan, attempt: int, submitted_at: float) -> None:
    tier, experts = plan[attempt]
    queue = f"tier.{tier}"
    group_ = group(
        app.signature("bare.durable_expert", args=(job_id, attempt, index), queue=queue)
        for index in range(experts)
    )
    args = (job_id, run, plan, attempt, submitted_at)
    callback = app.signature("bare.durable_aggregate", args=args, queue=queue)
    chord(group_)(callback)


@app.task(name="bare.durable_expert")
def durable_expert(job_id: str, attempt: int, index: int) -> dict[str, Any]:
    """Stores its result before it returns (a redelivery writes nothing twice), returns a marker."""
    _connection().execute(
        f"INSERT INTO {EXPERTS_TABLE} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (job_id, attempt, index, f"answer {index} of attempt {attempt}"),
    )
    return {"expert": index, "ok": True}


@app.task(name="bare.durable_aggregate")
def durable_aggregate(
    markers: list[dict[str, Any]], job_id: str, run: str, plan: Plan, attempt: int, submitted_at: float
) -> str:
    """The next attempt on its tier's queue while tierflow's run took one, else the final row."""
    if attempt + 1 < len(plan):
        tier = plan[attempt + 1][0]
        args = (job_id, run, plan, attempt + 1, submitted_at)
        app.send_task("bare.durable_run_job", args=args, queue=f"tier.{tier}")
        return "escalate"
    verdict = "accept" if all(marker["ok"] for marker in markers) else "fail"
    _connection().execute(
        f"INSERT INTO {RESULTS_TABLE} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
        (job_id, run, plan[0][0], verdict, submitted_at, time.time()),
    )
    return verdict
