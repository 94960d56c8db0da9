"""The chaos benchmark: a batch of jobs through tierflow while its parts are broken on purpose.

    python bench/chaos.py [--jobs 10000] [--broker redis|amqp] [--timeout S] [--json]

Started as a user starts them, at default settings but for the provider's latency:
`tierflow worker --queues classify`, one `tierflow worker --tier T` per tier (the
README's slots), `tierflow worker --queues maintenance` and `tierflow beat`, against a
fresh PostgreSQL database, the chosen broker, chord results in a Redis database of
their own, and `tierflow provider-server` as every tier's models (openai and anthropic
SDKs over loopback HTTP). The batch is the example jobs repeated with unique text,
sent with `tierflow submit`. While it runs:

- every --kill-every seconds a random tier worker is SIGKILLed and started again;
- once, when --flush-at of the jobs are terminal, the broker loses every message
  (Redis: FLUSHDB of its database; RabbitMQ: every tierflow queue purged);
- once, at --terminate-at, every PostgreSQL backend of the run's database is terminated;
- from the submit on, the provider server fails 20% of calls (half 429 with Retry-After,
  half 500) and holds 5% until they time out.

One JSON object at the end: jobs, terminal, lost, duplicate_results, cost_mismatch_usd,
seconds, and per fault the seconds until the queues were moving again
(bench/chaos_faults.py, bench/chaos_audit.py say how each is counted). Exit status 0
when nothing was lost or doubled and the cost adds up, 1 otherwise, 2 past --timeout
(everything torn down). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.chaos_audit import audit  # noqa: E402
from bench.chaos_faults import Chaos, Monitor, utcnow  # noqa: E402
from bench.chaos_stack import (  # noqa: E402
    PRICES,
    TIER_MODELS,
    broker_for,
    environment,
    make_fleet,
    provider_fault_rules,
    run_cli,
    start_provider,
)
from bench.services import WorkerFailed, conninfo, fresh_database, run_bounded, stop_workers  # noqa: E402
from bench.throughput import machine  # noqa: E402
from bench.workload import load_examples, make_jobs, write_jsonl  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/13"
BACKEND_URL = "redis://127.0.0.1:6379/15"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672"
# The README's slots per tier worker: a worker of threads keeps at most 16 database
# connections (plus 3), so the three stay well under PostgreSQL's default limit of 100.
CONCURRENCY = "small=64,medium=32,large=16"
POLL_S = 1.0
REPORT_RESERVE_S = 60.0  # of --timeout, kept for the final audit and the teardown


def parse_concurrency(text: str) -> dict[str, int]:
    slots: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        role, _, number = part.partition("=")
        if role not in ("classify", "small", "medium", "large", "maintenance") or not number.isdigit():
            raise argparse.ArgumentTypeError(f"not ROLE=N: {part!r}")
        slots[role] = int(number)
    return slots


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add = parser.add_argument
    add("--jobs", type=int, default=10_000, help="jobs in the batch (default 10000)")
    add("--broker", choices=("redis", "amqp"), default="redis", help="the broker (default redis)")
    add("--timeout", type=float, default=1500.0, help="global limit in seconds (default 1500)")
    add("--kill-every", type=float, default=30.0, help="seconds between tier-worker kills (default 30)")
    add("--flush-at", type=float, default=0.25, help="terminal share at which the broker is flushed")
    add("--terminate-at", type=float, default=0.5, help="terminal share at which PG backends are terminated")
    add("--errors", type=float, default=0.20, help="share of calls failed with 429 or 500 (default 0.20)")
    add("--timeouts", type=float, default=0.05, help="share of calls held until they time out (default 0.05)")
    add("--latency-ms", type=float, default=200.0, help="mean latency of the provider server (default 200)")
    add("--concurrency", type=parse_concurrency, default=parse_concurrency(CONCURRENCY), help=CONCURRENCY)
    add("--settle", type=float, default=20.0, help="seconds the system runs on after the last terminal job")
    add("--seed", type=int, default=0, help="seed of the kills' choice and the provider's draws")
    add("--admin-url", default=ADMIN_URL, help="PostgreSQL database to create the run's in")
    add("--redis-url", default=REDIS_URL, help="the Redis broker's database (flushed)")
    add("--backend-url", default=BACKEND_URL, help="Redis database of the chord results (flushed)")
    add("--amqp-url", default=AMQP_URL, help="RabbitMQ, without a virtual host (one is made for the run)")
    add("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.timeout <= REPORT_RESERVE_S or args.kill_every <= 0:
        parser.error(f"--jobs must be >= 1, --timeout > {REPORT_RESERVE_S:.0f} and --kill-every > 0")
    if not (0 <= args.errors < 1 and 0 <= args.timeouts < 1 - args.errors):
        parser.error("--errors and --timeouts are shares of the calls, below 1 together")
    return args


_quiet = False


def log(message: str) -> None:
    print(message, file=sys.stderr if _quiet else sys.stdout, flush=True)


def drive(chaos: Chaos, args: argparse.Namespace, total: int, started: float, stop_at: float) -> bool:
    """Apply the faults on their schedule until every job is terminal (True) or time runs out (False)."""
    monitor = chaos.monitor
    next_kill, next_log = started + args.kill_every, started
    flushed = terminated = False
    while True:
        now = time.monotonic()
        done = monitor.terminal()
        monitor.update(utcnow())
        if done >= total:
            return True
        if now >= stop_at:
            return False
        for note in chaos.restart_exited():
            log(f"  {now - started:6.1f}s  {note}; started again")
        if now >= next_kill:
            chaos.kill_random_tier(now - started)
            next_kill = time.monotonic() + args.kill_every  # after a slow submit, no kills back to back
        if not flushed and done >= args.flush_at * total:
            chaos.flush_broker(now - started)
            flushed = True
        if not terminated and done >= args.terminate_at * total:
            chaos.terminate_database_backends(now - started)
            terminated = True
        if now >= next_log:
            log(f"  {now - started:6.1f}s  {done}/{total} terminal, {chaos.kills} kills")
            next_log = now + 15.0
        time.sleep(POLL_S)


def settle(monitor: Monitor, seconds: float) -> None:
    """Let the system run on without faults, so a late duplicate delivery has time to show."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        monitor.update(utcnow())
        time.sleep(POLL_S)
    monitor.update(utcnow())


def recovery_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fault, the seconds until the queues were moving again (kills: each, their median and max)."""
    summary: dict[str, Any] = {}
    kills = [e["recovered_s"] for e in events if e["fault"] == "kill"]
    known = [value for value in kills if value is not None]
    summary["kill"] = {
        "count": len(kills),
        "median_s": round(statistics.median(known), 1) if known else None,
        "max_s": max(known) if known and len(known) == len(kills) else None,
        "each_s": kills,
    }
    for event in events:
        if event["fault"] != "kill":
            summary[event["fault"]] = event["recovered_s"]
    return summary


def seconds_to_last(connection: psycopg.Connection[Any], batch_id: str, since: datetime) -> float | None:
    row = connection.execute("SELECT max(finished_at) FROM jobs WHERE batch_id = %s", (batch_id,)).fetchone()
    return None if not row or row[0] is None else round((row[0] - since).total_seconds(), 1)


def run(args: argparse.Namespace, workdir: Path, deadline: float) -> dict[str, Any]:
    jobs_path = write_jsonl(
        workdir / "jobs.jsonl", make_jobs(load_examples(ROOT / "examples"), args.jobs, "chaos")
    )
    with (
        broker_for(args.broker, args.redis_url, args.backend_url, args.amqp_url) as broker,
        fresh_database(args.admin_url) as database_url,
    ):
        provider = start_provider(workdir, args.latency_ms, args.seed, environment({}))
        settings = {
            "database_url": database_url,
            **broker.settings(),
            "tiers": TIER_MODELS,
            "prices": PRICES,
            "openai_base_url": f"{provider.base_url}/v1",
            "anthropic_base_url": provider.base_url,
            "openai_api_key": "sk-local-not-a-secret",
            "anthropic_api_key": "sk-ant-local-not-a-secret",
        }
        env = environment(settings)
        run_cli(env, ROOT, 120, "db", "upgrade")
        run_cli(env, ROOT, 120, "kb", "load", str(ROOT / "examples" / "kb"))
        fleet = make_fleet(workdir, env, broker.url, args.concurrency)
        try:
            log(f"starting {len(fleet.argvs)} processes on {args.broker} ...")
            fleet.start_all(120.0)
            figures = chaos_run(
                args, workdir, deadline, jobs_path, env, fleet, provider, database_url, broker
            )
        finally:
            fleet.stop()
            stop_workers([provider.process])
    return figures


def chaos_run(
    args: argparse.Namespace,
    workdir: Path,
    deadline: float,
    jobs_path: Path,
    env: dict[str, str],
    fleet: Any,
    provider: Any,
    database_url: str,
    broker: Any,
) -> dict[str, Any]:
    from tierflow.providers.pricing import price_table

    rules = provider_fault_rules(args.errors, args.timeouts)
    provider.control("faults", {"rules": rules})
    started, started_at = time.monotonic(), utcnow()
    log(f"submitting {args.jobs} jobs ...")
    submitted = json.loads(
        run_cli(env, ROOT, deadline - time.monotonic(), "submit", str(jobs_path), "--json")
    )
    batch_id = submitted["batch_id"]
    log(f"  batch {batch_id}: {submitted['accepted']} accepted in {time.monotonic() - started:.1f}s")
    connection = psycopg.connect(conninfo(database_url), autocommit=True)
    monitor = Monitor(connection, batch_id, database_url.rsplit("/", 1)[1], started)
    monitor.record("provider_faults", started_at, 0.0, {"rules": rules}, [])
    chaos = Chaos(fleet, broker, provider, monitor, conninfo(args.admin_url), random.Random(args.seed))
    try:
        finished = drive(chaos, args, int(submitted["accepted"]), started, deadline - REPORT_RESERVE_S)
        log("all terminal; settling ..." if finished else "time is up: reporting what is unfinished")
        if finished:
            settle(monitor, args.settle)
        prices = price_table({k: (v[0], v[1]) for k, v in PRICES.items()})
        figures = audit(monitor.connection, database_url, batch_id, prices, provider.control("stats"))
        seconds = seconds_to_last(monitor.connection, batch_id, started_at)
    finally:
        monitor.connection.close()
    events = [event.as_dict() for event in monitor.events]
    return {
        "jobs": figures.pop("jobs"),
        "terminal": figures.pop("terminal"),
        "lost": figures.pop("lost"),
        "duplicate_results": figures.pop("duplicate_results"),
        "cost_mismatch_usd": figures.pop("cost_mismatch_usd"),
        "seconds": seconds,
        "recovery_s": recovery_summary(events),
        "broker": args.broker,
        **figures,
        "workers_restarted_unasked": chaos.restarts_unasked,
        "worker_log_errors": log_errors(workdir),
        "db_connections_peak": monitor.connections_peak,
        "fault_events": events,
        "settings": {
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "kill_every_s": args.kill_every,
            "errors": args.errors,
            "timeouts": args.timeouts,
            "seed": args.seed,
        },
        "machine": machine(),
    }


ERROR_NAME = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Timeout))\b")


def log_errors(workdir: Path) -> dict[str, int]:
    """How often each exception class is named in the processes' logs (the most frequent ten)."""
    counts: Counter[str] = Counter()
    for path in workdir.glob("*.log"):
        text = path.read_text(encoding="utf-8", errors="replace")
        counts.update(ERROR_NAME.findall(text))
    return dict(counts.most_common(10))


def goal_met(figures: dict[str, Any]) -> bool:
    return figures["lost"] == 0 and figures["duplicate_results"] == 0 and figures["cost_mismatch_usd"] == 0


def main(argv: list[str] | None = None) -> int:
    global _quiet
    args = parse_args(argv)
    _quiet = args.json
    deadline = time.monotonic() + args.timeout
    errors = (
        WorkerFailed,
        RuntimeError,
        subprocess.TimeoutExpired,
        psycopg.OperationalError,
        redis.RedisError,
    )
    figures = run_bounded(
        args.timeout, "tierflow-chaos-", lambda workdir: run(args, workdir, deadline), errors
    )
    if isinstance(figures, int):
        return figures
    print(json.dumps(figures, indent=None if args.json else 2, default=str))
    return 0 if goal_met(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
