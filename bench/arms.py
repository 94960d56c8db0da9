"""The arms of the throughput benchmark, each run once against fresh workers.

Arm A ("tierflow"): `tierflow worker` processes as a user starts them, a batch submitted
through tierflow's submit path, timed until every job of it is terminal in the store.
Arm B ("bare"): the same shape of work in plain Celery (bench/bare_app.py), timed until
every job has its row.
Arm C ("bare-durable"): tierflow's canvas (the attempts and experts its run of the same
repeat took) in plain Celery, each expert's result and the final result INSERTed.

In both arms a job's latency runs from the moment its batch was submitted to the
moment its terminal write was made: tierflow's jobs.finished_at - jobs.created_at,
bare's finished_at - submitted_at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import bare_app
from bench.meters import DatabaseMeter, cpu_by_pid, cpu_spent
from bench.services import WorkerProcess, check_alive, conninfo, flush_redis, running_workers
from bench.workload import job_text, make_jobs, write_jsonl

TIERS = ("small", "medium", "large")
TERMINAL = ["succeeded", "needs_review", "failed"]


@dataclass(frozen=True)
class BenchConfig:
    root: Path
    workdir: Path
    admin_url: str
    database_url: str
    redis_url: str
    concurrency: int
    loglevel: str
    warmup: int
    ready_timeout_s: float = 120.0
    poll_s: float = 0.02

    @property
    def database_name(self) -> str:
        return self.database_url.rsplit("/", 1)[1]


@dataclass(frozen=True)
class Batch:
    """Jobs to send: `send()` sends them and returns the parameters of `count_query`."""

    size: int
    send: Callable[[], tuple[Any, ...]]
    count_query: str


@dataclass
class ArmResult:
    arm: str
    jobs: int
    seconds: float
    submit_s: float
    latencies: list[float] = field(default_factory=list)
    usage: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


def run_batch(config: BenchConfig, workers: list[WorkerProcess], batch: Batch) -> tuple[float, float, int]:
    """Send the batch, poll until all of it is done: (send s, total s, polls made)."""
    started = time.perf_counter()
    params = batch.send()
    submit_s = time.perf_counter() - started
    polls = 0
    with psycopg.connect(conninfo(config.database_url), autocommit=True) as connection:
        while True:
            polls += 1
            row = connection.execute(batch.count_query, params).fetchone()
            if row is not None and row[0] >= batch.size:
                return submit_s, time.perf_counter() - started, polls
            check_alive(workers)
            time.sleep(config.poll_s)


def measure(
    config: BenchConfig,
    arm: str,
    workers: list[WorkerProcess],
    env: dict[str, str],
    batches: list[Batch],
    release: Callable[[], None] = lambda: None,
) -> ArmResult:
    """Start the workers, run the warm-up batch (if any) then the timed one, stop the workers.

    `release` closes the driver's own database connections once the batches are done.
    """
    database = DatabaseMeter(conninfo(config.admin_url), config.database_name)
    counters_before = database.counters()
    with running_workers(workers, env, config.root, config.redis_url, config.ready_timeout_s):
        polls = sum(run_batch(config, workers, batch)[2] for batch in batches[:-1])
        pids = [worker.process.pid for worker in workers if worker.process is not None]
        workers_before, backends_before = cpu_by_pid(pids), database.backends_cpu()
        submit_s, seconds, timed_polls = run_batch(config, workers, batches[-1])
        worker_cpu = cpu_spent(workers_before, cpu_by_pid(pids))
        db_cpu = cpu_spent(backends_before, database.backends_cpu())
    release()
    database.wait_idle()
    counters = database.counters() - counters_before
    all_jobs, timed = sum(batch.size for batch in batches), batches[-1].size
    usage = {
        "worker_cpu_ms_per_job": worker_cpu / timed * 1000,
        "db_cpu_ms_per_job": db_cpu / timed * 1000,
        # the driver's polls are transactions too; they are not the arm's work
        "db_transactions_per_job": (counters.statement_transactions - polls - timed_polls) / all_jobs,
        "db_rows_written_per_job": counters.rows_written / all_jobs,
        "db_connections_per_job": counters.sessions / all_jobs,
    }
    return ArmResult(arm, timed, seconds, submit_s, usage=usage)


# --- arm A: tierflow ---------------------------------------------------------------


def tierflow_env(config: BenchConfig) -> dict[str, str]:
    return {
        **os.environ,
        "TIERFLOW_DATABASE_URL": config.database_url,
        "TIERFLOW_BROKER_URL": config.redis_url,
        "TIERFLOW_RESULT_BACKEND": config.redis_url,
        "TIERFLOW_FAKE_LATENCY_SCALE": "0",
    }


def tierflow_command() -> str:
    return str(Path(sys.executable).with_name("tierflow"))


def tierflow_workers(config: BenchConfig, tag: str) -> list[WorkerProcess]:
    """`tierflow worker --queues classify` and one `tierflow worker --tier T` per tier."""
    common = ["--concurrency", str(config.concurrency), "--loglevel", config.loglevel]
    shapes = {"classify": ["--queues", "classify"], **{tier: ["--tier", tier] for tier in TIERS}}
    workers = []
    for name, selector in shapes.items():
        node = f"bench-{tag}-{name}@bench"
        argv = [tierflow_command(), "worker", *selector, *common, "--hostname", node]
        workers.append(WorkerProcess(node, argv, config.workdir / f"{tag}-{name}.log"))
    return workers


def tierflow_db_upgrade(config: BenchConfig) -> None:
    """`tierflow db upgrade`, as a user migrates a new database."""
    argv = [tierflow_command(), "db", "upgrade"]
    done = subprocess.run(
        argv, cwd=config.root, env=tierflow_env(config), capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"tierflow db upgrade failed ({done.returncode}):\n{done.stderr[-2000:]}")


def tierflow_batch(app: Any, runtime: Any, path: Path, jobs: list[dict[str, Any]]) -> Batch:
    """Submitting `jobs` from a JSONL file through tierflow's own submit path."""
    from tierflow.tasks.submission import submit_file

    write_jsonl(path, jobs)

    def send() -> tuple[Any, ...]:
        report = submit_file(app, runtime, path)
        if report.batch_id is None or report.accepted != len(jobs):
            raise RuntimeError(f"tierflow refused the batch: {report.as_dict()}")
        return (report.batch_id, TERMINAL)

    return Batch(len(jobs), send, "SELECT count(*) FROM jobs WHERE batch_id = %s AND state = ANY(%s)")


def run_tierflow(config: BenchConfig, examples: list[dict[str, Any]], count: int, tag: str) -> ArmResult:
    from tierflow.tasks.runtime import runtime_for
    from tierflow.worker.app import create_app
    from tierflow.worker.settings import load_settings

    flush_redis(config.redis_url)
    settings = load_settings(
        database_url=config.database_url,
        broker_url=config.redis_url,
        result_backend=config.redis_url,
        fake_latency_scale=0.0,
    )
    app = create_app(settings)
    runtime = runtime_for(app)
    batches = [tierflow_batch(app, runtime, config.workdir / f"{tag}.jsonl", make_jobs(examples, count, tag))]
    if config.warmup:
        warmup_jobs = make_jobs(examples, config.warmup, f"{tag}w")
        batches.insert(0, tierflow_batch(app, runtime, config.workdir / f"{tag}w.jsonl", warmup_jobs))
    workers = tierflow_workers(config, tag)
    try:
        result = measure(config, "tierflow", workers, tierflow_env(config), batches, runtime.engine.dispose)
    finally:
        runtime.engine.dispose()
        app.close()
    result.latencies, result.detail = tierflow_outcome(config.database_url, f"{tag}-%")
    return result


def tierflow_outcome(database_url: str, id_pattern: str) -> tuple[list[float], dict[str, Any]]:
    """Per-job latencies, and where the jobs went: final states, first tiers, attempts, experts."""
    with psycopg.connect(conninfo(database_url)) as connection:
        rows = connection.execute(
            "SELECT extract(epoch FROM finished_at - created_at), state, error FROM jobs WHERE id LIKE %s",
            (id_pattern,),
        ).fetchall()
        attempts = connection.execute(
            "SELECT number, tier, json_array_length(decision->'experts') FROM attempts WHERE job_id LIKE %s",
            (id_pattern,),
        ).fetchall()
    detail = {
        "states": dict(Counter(state for _, state, _ in rows)),
        "first_tier": dict(Counter(tier for number, tier, _ in attempts if number == 1)),
        "attempts": len(attempts),
        "experts": sum(experts for _, _, experts in attempts),
        "errors": dict(Counter(error[:160] for _, state, error in rows if state == "failed").most_common(3)),
    }
    return [float(latency) for latency, _, _ in rows], detail


# --- arm B: bare Celery -------------------------------------------------------------


def bare_env(config: BenchConfig) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(config.root), os.environ.get("PYTHONPATH")])),
        "BENCH_BROKER_URL": config.redis_url,
        "BENCH_RESULT_BACKEND": config.redis_url,
        "BENCH_DATABASE_URL": conninfo(config.database_url),
    }


def bare_workers(config: BenchConfig, tag: str) -> list[WorkerProcess]:
    """The same processes, pools and concurrency as arm A's, running bench.bare_app."""
    celery = [sys.executable, "-m", "celery", "-A", "bench.bare_app", "worker"]
    common = ["--concurrency", str(config.concurrency), "--loglevel", config.loglevel]
    shapes = {"classify": ("classify", "prefork"), **{tier: (f"tier.{tier}", "threads") for tier in TIERS}}
    workers = []
    for name, (queue, pool) in shapes.items():
        node = f"bench-{tag}-{name}@bench"
        argv = [*celery, "--queues", queue, "--pool", pool, *common, "--hostname", node]
        workers.append(WorkerProcess(node, argv, config.workdir / f"{tag}-{name}.log"))
    return workers


def bare_batch(jobs: list[dict[str, Any]], run: str) -> Batch:
    """One bare.classify message per job, all stamped with the batch's submit time."""

    def send() -> tuple[Any, ...]:
        submitted_at = time.time()
        for job in jobs:
            args = (job["id"], run, job_text(job), submitted_at)
            bare_app.app.send_task("bare.classify", args=args, queue="classify")
        return (run,)

    return Batch(len(jobs), send, f"SELECT count(*) FROM {bare_app.RESULTS_TABLE} WHERE run = %s")


def run_bare(config: BenchConfig, examples: list[dict[str, Any]], count: int, tag: str) -> ArmResult:
    flush_redis(config.redis_url)
    with psycopg.connect(conninfo(config.database_url), autocommit=True) as connection:
        connection.execute(bare_app.CREATE_TABLE)
    bare_app.app.conf.update(broker_url=config.redis_url, result_backend=config.redis_url)
    batches = [bare_batch(make_jobs(examples, count, tag), tag)]
    if config.warmup:
        batches.insert(0, bare_batch(make_jobs(examples, config.warmup, f"{tag}w"), f"{tag}w"))
    try:
        result = measure(config, "bare", bare_workers(config, tag), bare_env(config), batches)
    finally:
        bare_app.app.close()
    result.latencies, result.detail = bare_outcome(config.database_url, tag)
    return result


def bare_outcome(database_url: str, run: str) -> tuple[list[float], dict[str, Any]]:
    with psycopg.connect(conninfo(database_url)) as connection:
        rows = connection.execute(
            f"SELECT finished_at - submitted_at, tier FROM {bare_app.RESULTS_TABLE} WHERE run = %s", (run,)
        ).fetchall()
    detail = {
        "states": {"succeeded": len(rows)},
        "first_tier": dict(Counter(tier for _, tier in rows)),
        "attempts": len(rows),
        "experts": len(rows) * len(bare_app.EXPERTS),
    }
    return [float(latency) for latency, _ in rows], detail


# --- arm C: bare-durable ------------------------------------------------------------


def tierflow_plans(database_url: str, id_pattern: str) -> list[bare_app.Plan]:
    """Per job of a tierflow run, in job order: its attempts as [tier, number of experts]."""
    with psycopg.connect(conninfo(database_url)) as connection:
        rows = connection.execute(
            "SELECT job_id, tier, json_array_length(decision->'experts') FROM attempts "
            "WHERE job_id LIKE %s ORDER BY job_id, number",
            (id_pattern,),
        ).fetchall()
    plans: dict[str, bare_app.Plan] = {}
    for job_id, tier, experts in rows:
        plans.setdefault(job_id, []).append([tier, max(int(experts or 0), 1)])
    return list(plans.values())


def durable_batch(jobs: list[dict[str, Any]], run: str, plans: list[bare_app.Plan]) -> Batch:
    """One bare.durable_classify message per job; job i takes plan i (cycling if fewer)."""

    def send() -> tuple[Any, ...]:
        submitted_at = time.time()
        for index, job in enumerate(jobs):
            args = (job["id"], run, plans[index % len(plans)], submitted_at)
            bare_app.app.send_task("bare.durable_classify", args=args, queue="classify")
        return (run,)

    return Batch(len(jobs), send, f"SELECT count(*) FROM {bare_app.RESULTS_TABLE} WHERE run = %s")


def run_bare_durable(
    config: BenchConfig, examples: list[dict[str, Any]], count: int, tag: str, plans: list[bare_app.Plan]
) -> ArmResult:
    """Arm C: tierflow's canvas (`plans`, from its run) on plain Celery, every result stored."""
    if not plans:
        raise RuntimeError("bare-durable needs tierflow's attempts of the same repeat; it took none")
    flush_redis(config.redis_url)
    with psycopg.connect(conninfo(config.database_url), autocommit=True) as connection:
        connection.execute(bare_app.CREATE_TABLE)
        connection.execute(bare_app.CREATE_EXPERTS_TABLE)
    bare_app.app.conf.update(broker_url=config.redis_url, result_backend=config.redis_url)
    batches = [durable_batch(make_jobs(examples, count, tag), tag, plans)]
    if config.warmup:
        batches.insert(0, durable_batch(make_jobs(examples, config.warmup, f"{tag}w"), f"{tag}w", plans))
    try:
        result = measure(config, "bare-durable", bare_workers(config, tag), bare_env(config), batches)
    finally:
        bare_app.app.close()
    result.latencies, result.detail = bare_outcome(config.database_url, tag)
    result.detail["attempts"] = sum(len(plans[i % len(plans)]) for i in range(count))
    result.detail["experts"] = sum(n for i in range(count) for _, n in plans[i % len(plans)])
    return result
