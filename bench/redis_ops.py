"""Redis commands per job: tierflow's arm of bench/throughput.py, counted with MONITOR.

    python bench/redis_ops.py [--small 50] [--large 150] [--redis-url redis://127.0.0.1:6379/12]
                              [--db-prefix tierflow_bench_] [--json]

MONITOR sees every client's commands on the server, each with its database number, so
only commands on `--redis-url`'s database are counted (other users of the same server
are left out, unlike INFO commandstats, which is server-wide). Each run starts fresh
workers, so their start-up and shutdown commands are in every count: the figure per job
is the difference between a run of `--large` jobs and one of `--small` jobs, divided by
the difference in jobs, which cancels what does not grow with the batch. MONITOR slows
Redis down; the counts, not the timings, are the result. No warm-up batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.arms import BenchConfig, run_tierflow, tierflow_db_upgrade  # noqa: E402
from bench.services import WorkerFailed, flush_redis, fresh_database, run_bounded  # noqa: E402
from bench.throughput import ADMIN_URL, REDIS_URL  # noqa: E402
from bench.workload import load_examples  # noqa: E402


class CommandCounter:
    """Counts commands per name on one database of the server, from a MONITOR connection."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            for event in monitor.listen():
                if self._stop.is_set():
                    return
                if event.get("db") == self.db:
                    self.counts[str(event.get("command", "")).split(" ", 1)[0].upper()] += 1

    def __enter__(self) -> CommandCounter:
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.client.ping()  # one more command wakes the listener so that it sees the stop
        self._thread.join(10)


def count_run(config: BenchConfig, examples: list[dict[str, Any]], jobs: int, tag: str) -> dict[str, Any]:
    with CommandCounter(config.redis_url) as counter:
        run_tierflow(config, examples, jobs, tag)
    return {"jobs": jobs, "commands": sum(counter.counts.values()), "by_command": dict(counter.counts)}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    examples = load_examples(ROOT / "examples")
    with fresh_database(ADMIN_URL, args.db_prefix) as database_url:
        config = BenchConfig(ROOT, workdir, ADMIN_URL, database_url, args.redis_url, 8, "WARNING", 0)
        tierflow_db_upgrade(config)
        small = count_run(config, examples, args.small, "s")
        large = count_run(config, examples, args.large, "l")
    flush_redis(args.redis_url)
    per_job = (large["commands"] - small["commands"]) / (large["jobs"] - small["jobs"])
    names = set(small["by_command"]) | set(large["by_command"])
    by_command = {
        name: (large["by_command"].get(name, 0) - small["by_command"].get(name, 0))
        / (args.large - args.small)
        for name in names
    }
    top = dict(sorted(by_command.items(), key=lambda item: -item[1])[:12])
    return {"runs": [small, large], "commands_per_job": per_job, "per_job_by_command": top}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=150)
    parser.add_argument("--redis-url", default=REDIS_URL, help="Redis database of its own (flushed)")
    parser.add_argument("--db-prefix", default="tierflow_bench_")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error("need 0 < --small < --large")
    errors = (WorkerFailed, RuntimeError, psycopg.OperationalError, redis.RedisError)
    figures = run_bounded(args.timeout, "tierflow-redis-ops-", lambda workdir: run(args, workdir), errors)
    if isinstance(figures, int):
        return figures
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for single in figures["runs"]:
        print(f"{single['jobs']:>6} jobs: {single['commands']} commands on the database")
    print(f"Redis commands per job (difference of the two runs): {figures['commands_per_job']:.1f}")
    for name, count in figures["per_job_by_command"].items():
        print(f"  {name:<12} {count:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
