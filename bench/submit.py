"""Submission: `tierflow submit`'s path storing and enqueuing a large batch, jobs/s and peak memory.

    python bench/submit.py [--jobs 100000] [--small 5000] [--before-rev REV] [--json]

Writes batches of BANKING77 texts (../shared/data/banking77, else synthetic text) as
support jobs with unique ids, then per arm and size: a fresh PostgreSQL database
migrated to head, the Redis database flushed, and one child process that builds the
app as `tierflow submit` does and times `tasks.submission.submit_file` (stored,
committed and every classify message published). The child reports its wall and CPU
seconds, its resident memory before the submission and its peak. The parent checks
that the database holds the jobs and the classify queue as many messages.

Arms: `after` is this tree, at `--small` and `--jobs` jobs (peak memory side by side:
it must not grow with the file). With `--before-rev REV`, `before` is that commit's
tree (`git archive`), at `--small` jobs only when `--jobs` is past what its one INSERT
could take (65,535 parameters: 5,461 jobs); the ratio after/before is at `--small`.
A last row times `tierflow submit --json` as a user runs it, start-up included.

No workers run: the messages wait in Redis. Loopback only; bounded by --timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.services import flush_redis, fresh_database, run_bounded  # noqa: E402

BEFORE_LIMIT = 65_535 // 12  # the old path's one INSERT: 12 parameters a job
DATA_CANDIDATES = (ROOT.parent / "shared" / "data" / "banking77", Path("/work/shared/data/banking77"))

CHILD = """
import json, resource, sys, time
from pathlib import Path
from tierflow.tasks.runtime import runtime_for
from tierflow.tasks import submission
from tierflow.tasks.submission import submit_file
from tierflow.worker.app import create_app
from tierflow.worker.settings import load_settings

def rss_kb():
    for line in Path("/proc/self/status").read_text().split("\\n"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

app = create_app(load_settings())
runtime = runtime_for(app)
before = rss_kb()
wall, cpu = time.perf_counter(), time.process_time()
report = submit_file(app, runtime, Path(sys.argv[1]))
print(json.dumps({
    "seconds": time.perf_counter() - wall,
    "cpu_s": time.process_time() - cpu,
    "accepted": report.accepted,
    "rejected": len(report.rejected),
    "rss_before_kb": before,
    "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "code": submission.__file__,
}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the large batch (default 100000)")
    parser.add_argument("--small", type=int, default=5_000, help="jobs in the small batch (default 5000)")
    parser.add_argument("--before-rev", help="a git revision to measure side by side (e.g. main)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--timeout", type=float, default=1200.0, help="global limit in seconds (default 1200)"
    )
    parser.add_argument(
        "--admin-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="where tierflow_bench_<random> databases are created and dropped",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/13", help="a Redis database of its own"
    )
    return parser.parse_args(argv)


def texts() -> list[str]:
    for folder in DATA_CANDIDATES:
        path = folder / "train.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]
            return [row["text"] for row in rows]
    return [f"My card payment number {n} was declined twice, what should I do?" for n in range(1000)]


def write_batch(path: Path, count: int, pool: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            job = {
                "id": f"bench-{n}",
                "kind": "support",
                "payload": {"text": f"{pool[n % len(pool)]} (ticket {n})", "customer": f"c{n % 977}"},
                "metadata": {"tenant": f"t{n % 7}", "priority": n % 10},
            }
            out.write(json.dumps(job, ensure_ascii=False) + "\n")
    return path


def child_env(tree: Path, database_url: str, redis_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    return {
        **base,
        "PYTHONPATH": str(tree),
        "TIERFLOW_DATABASE_URL": database_url,
        "TIERFLOW_BROKER_URL": redis_url,
        "TIERFLOW_RESULT_BACKEND": redis_url,
    }


def checked(database_url: str, redis_url: str, expected: int) -> None:
    import redis
    from sqlalchemy import create_engine, func, select

    from tierflow.store.models import Job

    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(Job)).scalar_one()
    engine.dispose()
    client = redis.Redis.from_url(redis_url)
    queued = int(client.llen("classify"))
    client.close()
    if (stored, queued) != (expected, expected):
        raise RuntimeError(f"expected {expected} jobs stored and queued, found {stored} and {queued}")


def measure(args: argparse.Namespace, arm: str, tree: Path, batch: Path, jobs: int) -> dict[str, Any]:
    from tierflow.store.db import make_engine
    from tierflow.store.schema import upgrade

    with fresh_database(args.admin_url) as database_url:
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
        flush_redis(args.redis_url)
        env = child_env(tree, database_url, args.redis_url)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(batch)],
            env=env,
            cwd=tree,  # `python -c` puts the working folder first on sys.path: it must be the arm's tree
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
        if done.returncode != 0:
            return {"arm": arm, "jobs": jobs, "error": done.stderr.strip().split("\n")[-1][:300]}
        figures = json.loads(done.stdout.strip().split("\n")[-1])
        checked(database_url, args.redis_url, jobs)
        cli = cli_run(env, batch) if arm == "after" and jobs == args.jobs else None
    flush_redis(args.redis_url)
    row = {
        "arm": arm,
        "jobs": jobs,
        "seconds": round(figures["seconds"], 2),
        "jobs_per_s": round(jobs / figures["seconds"], 1),
        "cpu_us_per_job": round(1e6 * figures["cpu_s"] / jobs, 1),
        "peak_rss_mb": round(figures["peak_rss_kb"] / 1024, 1),
        "rss_growth_mb": round((figures["peak_rss_kb"] - figures["rss_before_kb"]) / 1024, 1),
        "code": figures["code"],
    }
    return {**row, "cli": cli} if cli else row


def cli_run(env: dict[str, str], batch: Path) -> dict[str, Any]:
    """`tierflow submit --json` on the same batch again: everything already stored, nothing sent."""
    tierflow = str(Path(sys.executable).with_name("tierflow"))
    started = time.perf_counter()
    done = subprocess.run([tierflow, "submit", "--json", str(batch)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    report = json.loads(done.stdout) if done.returncode == 0 else {}
    return {"resubmit_seconds_with_startup": round(seconds, 2), "duplicates": report.get("duplicates")}


def before_tree(rev: str, workdir: Path) -> Path:
    tree = workdir / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def body(args: argparse.Namespace) -> Any:
    def run(workdir: Path) -> dict[str, Any]:
        pool = texts()
        sizes = sorted({args.small, args.jobs})
        batches = {size: write_batch(workdir / f"jobs-{size}.jsonl", size, pool) for size in sizes}
        rows = []
        if args.before_rev:
            tree = before_tree(args.before_rev, workdir)
            for size in sizes:
                if size <= BEFORE_LIMIT:
                    rows.append(measure(args, "before", tree, batches[size], size))
        rows += [measure(args, "after", ROOT, batches[size], size) for size in sizes]
        return {"rows": rows, "ratios": ratios(rows, args), "before_rev": args.before_rev}

    return run


def ratios(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, float]:
    by = {(row["arm"], row["jobs"]): row for row in rows if "error" not in row}
    out: dict[str, float] = {}
    before, after = by.get(("before", args.small)), by.get(("after", args.small))
    if before and after:
        out["after_over_before_jobs_per_s"] = round(after["jobs_per_s"] / before["jobs_per_s"], 2)
        out["after_over_before_cpu_per_job"] = round(after["cpu_us_per_job"] / before["cpu_us_per_job"], 3)
    large = by.get(("after", args.jobs))
    if after and large and args.jobs != args.small:
        out["peak_rss_large_over_small"] = round(large["peak_rss_mb"] / after["peak_rss_mb"], 3)
    return out


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{'arm':8} {'jobs':>8} {'seconds':>8} {'jobs/s':>9} {'CPU us/job':>11} "
        f"{'peak RSS MB':>12} {'growth MB':>10}"
    )
    for row in report["rows"]:
        if "error" in row:
            print(f"{row['arm']:8} {row['jobs']:>8} failed: {row['error']}")
            continue
        print(
            f"{row['arm']:8} {row['jobs']:>8} {row['seconds']:>8} {row['jobs_per_s']:>9} "
            f"{row['cpu_us_per_job']:>11} {row['peak_rss_mb']:>12} {row['rss_growth_mb']:>10}"
        )
        if row.get("cli"):
            cli = row["cli"]
            print(
                f"         tierflow submit again (start-up included): "
                f"{cli['resubmit_seconds_with_startup']} s, {cli['duplicates']} duplicates"
            )
    for name, value in report["ratios"].items():
        print(f"{name}: {value}")
    print(f"wall: {report['wall_s']} s, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_bounded(args.timeout, "tierflow-bench-submit-", body(args), (RuntimeError, OSError))
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
