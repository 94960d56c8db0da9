"""Throughput and per-job latency of tierflow against bare Celery, side by side in one run.

    python bench/throughput.py [--jobs 300] [--repeats 1] [--concurrency 8] [--json]

Three arms: tierflow; `bare`, the chord's shape with one row written per job; and
`bare-durable`, the canvas tierflow's run of the same repeat took (its attempts and
experts per job) with each expert's result and the final result written to PostgreSQL.

One fresh PostgreSQL database for the run (dropped at the end, always) and one Redis
database number (flushed before each arm). Per arm and repeat: start the workers as
subprocesses, wait until each answers a ping, run a few warm-up jobs, then time a batch
of N jobs from submit to the last terminal write; stop the workers. Arms interleave
(A B A B ...) and each figure is the median over the repeats. The fake models answer
at once (TIERFLOW_FAKE_LATENCY_SCALE=0), so what is measured is orchestration.

Loopback only; bounded by --timeout, after which everything is torn down and the
benchmark exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import celery  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.arms import (  # noqa: E402
    ArmResult,
    BenchConfig,
    run_bare,
    run_bare_durable,
    run_tierflow,
    tierflow_db_upgrade,
    tierflow_plans,
)
from bench.services import WorkerFailed, flush_redis, fresh_database, run_bounded  # noqa: E402
from bench.workload import load_examples  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/12"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs per timed batch (default 300)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each arm, interleaved (default 1)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed jobs before each batch (default 20)")
    parser.add_argument("--concurrency", type=int, default=8, help="slots of every worker (default 8)")
    parser.add_argument("--loglevel", default="WARNING", help="workers' log level (default WARNING)")
    parser.add_argument("--timeout", type=float, default=300.0, help="global limit in seconds (default 300)")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="PostgreSQL database to create the run's in")
    parser.add_argument("--redis-url", default=REDIS_URL, help="Redis database for all arms (flushed)")
    parser.add_argument("--db-prefix", default="tierflow_bench_", help="name prefix of the run's database")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    for name in ("jobs", "repeats", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0 or args.timeout <= 0:
        parser.error("--warmup must be >= 0 and --timeout > 0")
    return args


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(runs: list[ArmResult]) -> dict[str, Any]:
    """The median over the repeats of one arm."""
    return {
        "arm": runs[0].arm,
        "jobs": runs[0].jobs,
        "repeats": len(runs),
        "seconds": statistics.median(run.seconds for run in runs),
        "submit_s": statistics.median(run.submit_s for run in runs),
        "jobs_per_s": statistics.median(run.jobs_per_s for run in runs),
        "p50_s": statistics.median(percentile(run.latencies, 0.50) for run in runs),
        "p95_s": statistics.median(percentile(run.latencies, 0.95) for run in runs),
        "runs_s": [round(run.seconds, 3) for run in runs],
        "usage": {key: statistics.median(run.usage[key] for run in runs) for key in runs[0].usage},
        "detail": runs[-1].detail,
    }


def compare(results: dict[str, list[ArmResult]], other: str = "bare") -> dict[str, Any]:
    """tierflow over `other`: of the medians, and the median of each repeat's pair (noise cancels)."""
    tierflow, bare = summarize(results["tierflow"]), summarize(results[other])
    paired = [a.jobs_per_s / b.jobs_per_s for a, b in zip(results["tierflow"], results[other], strict=True)]
    return {
        "jobs_per_s_ratio": tierflow["jobs_per_s"] / bare["jobs_per_s"],
        "jobs_per_s_ratio_paired": statistics.median(paired),
        "paired_ratios": [round(ratio, 3) for ratio in paired],
        "overhead_ms_per_job": (tierflow["seconds"] - bare["seconds"]) / tierflow["jobs"] * 1000,
        "p50_ratio": tierflow["p50_s"] / bare["p50_s"],
        "worker_cpu_ratio": (
            tierflow["usage"]["worker_cpu_ms_per_job"] / bare["usage"]["worker_cpu_ms_per_job"]
        ),
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "platform": platform.platform(terse=True),
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Both arms, interleaved, in one fresh database; the figures as one dict."""
    examples = load_examples(ROOT / "examples")
    results: dict[str, list[ArmResult]] = {"tierflow": [], "bare": [], "bare-durable": []}
    with fresh_database(args.admin_url, args.db_prefix) as database_url:
        config = BenchConfig(
            root=ROOT,
            workdir=workdir,
            admin_url=args.admin_url,
            database_url=database_url,
            redis_url=args.redis_url,
            concurrency=args.concurrency,
            loglevel=args.loglevel,
            warmup=args.warmup,
        )
        tierflow_db_upgrade(config)
        for repeat in range(args.repeats):
            for arm in results:
                log(args, f"repeat {repeat + 1}/{args.repeats}: {arm} ...")
                tag = f"{'tbd'[list(results).index(arm)]}{repeat}"
                if arm == "bare-durable":
                    plans = tierflow_plans(database_url, f"t{repeat}-%")
                    result = run_bare_durable(config, examples, args.jobs, tag, plans)
                else:
                    runner = run_tierflow if arm == "tierflow" else run_bare
                    result = runner(config, examples, args.jobs, tag)
                log(args, f"  {result.jobs} jobs in {result.seconds:.2f}s ({result.jobs_per_s:.1f} jobs/s)")
                results[arm].append(result)
    flush_redis(args.redis_url)  # leave the Redis database as empty as we found it
    return {
        "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("jobs", "repeats", "warmup", "concurrency", "loglevel")},
        "arms": [summarize(runs) for runs in results.values()],
        "comparison": compare(results),
        "comparison_durable": compare(results, "bare-durable"),
    }


def log(args: argparse.Namespace, message: str) -> None:
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def print_report(figures: dict[str, Any]) -> None:
    m, s = figures["machine"], figures["settings"]
    print(f"\nmachine: {m['cpus']} CPUs, Python {m['python']}, Celery {m['celery']}, {m['platform']}")
    print(
        f"workload: {s['jobs']} jobs per batch, median of {s['repeats']} run(s) per arm, "
        f"{s['warmup']} warm-up jobs, concurrency {s['concurrency']} per worker, log level {s['loglevel']}"
    )
    header = f"{'arm':<14}{'jobs':>6}{'seconds':>10}{'submit s':>10}{'jobs/s':>9}{'p50 s':>9}{'p95 s':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for arm in figures["arms"]:
        print(
            f"{arm['arm']:<14}{arm['jobs']:>6}{arm['seconds']:>10.2f}{arm['submit_s']:>10.3f}"
            f"{arm['jobs_per_s']:>9.1f}{arm['p50_s']:>9.3f}{arm['p95_s']:>9.3f}"
        )
    for other, c in (("bare-durable", figures["comparison_durable"]), ("bare", figures["comparison"])):
        print(
            f"\ntierflow/{other} jobs/s: {c['jobs_per_s_ratio']:.3f} of the medians, "
            f"{c['jobs_per_s_ratio_paired']:.3f} median of the paired runs {c['paired_ratios']}\n"
            f"  p50 latency ratio: {c['p50_ratio']:.2f}   overhead per job: {c['overhead_ms_per_job']:.1f} ms"
            f"   worker CPU per job ratio: {c['worker_cpu_ratio']:.2f}"
        )
    print_usage(figures["arms"])
    for arm in figures["arms"]:
        d = arm["detail"]
        print(
            f"{arm['arm']:<14}runs {arm['runs_s']} s; states {d['states']}; first tier {d['first_tier']}; "
            f"{d['attempts'] / arm['jobs']:.2f} attempts and {d['experts'] / arm['jobs']:.2f} experts per job"
        )
        for error, count in d.get("errors", {}).items():
            print(f"warning: {count} {arm['arm']} jobs failed with: {error}")


USAGE_COLUMNS = (
    ("worker_cpu_ms_per_job", "worker CPU ms"),
    ("db_cpu_ms_per_job", "PG CPU ms"),
    ("db_transactions_per_job", "PG xacts"),
    ("db_rows_written_per_job", "PG rows written"),
    ("db_connections_per_job", "PG connects"),
)


def print_usage(arms: list[dict[str, Any]]) -> None:
    """Per job: what each arm's workers and its PostgreSQL backends spent."""
    header = f"{'per job':<14}" + "".join(f"{title:>17}" for _, title in USAGE_COLUMNS)
    print("\n" + header + "\n" + "-" * len(header))
    for arm in arms:
        print(f"{arm['arm']:<14}" + "".join(f"{arm['usage'][key]:>17.2f}" for key, _ in USAGE_COLUMNS))
    print()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    errors = (WorkerFailed, RuntimeError, psycopg.OperationalError, redis.RedisError)
    figures = run_bounded(args.timeout, "tierflow-bench-", lambda workdir: run(args, workdir), errors)
    if isinstance(figures, int):
        return figures
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
