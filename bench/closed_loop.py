"""The closed learning loop on recorded model outcomes, through the real distributed system.

    python bench/closed_loop.py [--jobs 316] [--seed 0] [--timeout 900] [--data FILE] [--json]

Recorded prompts (RouteLLM's shape, e.g. ../shared/data/routellm/gsm8k.jsonl) are split
in two seeded halves. The local provider server replays the weak recorded model for the
small tier and the strong one for the tiers above, by exact prompt text, through the
openai SDK over loopback HTTP; the server puts each recorded text into the JSON object the
answerer asks for, with the rules' confidence for that model's strength. One throwaway
PostgreSQL database, Redis database 14, and `tierflow worker` processes (classify and the
two tiers: the file records two models, so the ladder is small and large).

Phase 1 (learn): the first half is submitted under policy version 1 and run to the end;
each job gets a gold label (`tierflow feedback --labels`: the reference answer as
`expected`, which tierflow compares with the job's result); `tierflow reflect --json`.
Phase 2 (use): the second half under the version reflect left active, then, after
`tierflow policy rollback 1`, the same prompts again under new job ids: learned against
unlearned rules on the same prompts in the same run, with always-small and always-large
on those prompts from the file as references.

Everything stops by itself: bounded batches, a global --timeout (exit status 2), worker
process groups killed and the database dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.loop_figures import (  # noqa: E402
    Loop,
    Prompt,
    phase_figures,
    print_report,
    ratios,
    references,
)
from bench.services import (  # noqa: E402
    WorkerFailed,
    WorkerProcess,
    check_alive,
    conninfo,
    flush_redis,
    fresh_database,
    run_bounded,
    running_workers,
)
from bench.throughput import machine  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"
DATA = ROOT.parent / "shared" / "data" / "routellm" / "gsm8k.jsonl"
TERMINAL = ["succeeded", "needs_review", "failed"]
# 10% exploration: with 316 jobs to learn from, 5% would start about 16 on large, fewer than
# the 20 outcomes a tier needs before reflect fits it.
LEARNING = {"encoder": "local", "min_samples": 20, "min_version_samples": 20, "explore_share": 0.1}
POLICY_TTL_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=0, help="prompts per phase (default: half the file)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--timeout", type=float, default=900.0, help="global limit in seconds (default 900)")
    parser.add_argument("--data", type=Path, default=DATA, help="recorded outcomes JSONL (with responses)")
    parser.add_argument("--concurrency", type=int, default=8, help="slots of every worker (default 8)")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="PostgreSQL database to create the run's in")
    parser.add_argument("--redis-url", default=REDIS_URL, help="Redis database of the run (flushed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    if args.jobs < 0 or args.concurrency < 1 or args.timeout <= 0:
        parser.error("--jobs must be >= 0, --concurrency >= 1 and --timeout > 0")
    return args


# --- data and models -----------------------------------------------------------------------------


def read_prompts(path: Path) -> tuple[list[Prompt], str, str]:
    """Every record with both tier models' responses, and (small, large): the weaker model is small."""
    from tierflow.providers.outcomes_data import choose_tiers, read_recorded

    records = read_recorded(path)
    tiers = choose_tiers(records, records)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    prompts = []
    for number, (record, raw) in enumerate(zip(records, lines, strict=True), start=1):
        outcomes = {m: record.outcomes[m] for m in (tiers.small, tiers.large)}
        if any(outcome.response is None for outcome in outcomes.values()):
            continue  # nothing to replay (MMLU records correctness only)
        key = re.sub(r"[^\w.-]", "_", str(raw.get("id") or f"line{number}"))
        prompts.append(
            Prompt(
                key,
                record.prompt,
                raw.get("reference"),
                {m: str(o.response) for m, o in outcomes.items()},
                {m: o.correct for m, o in outcomes.items()},
            )
        )
    if len(prompts) < 4:
        raise RuntimeError(f"{path}: fewer than 4 records with both models' responses")
    return prompts, tiers.small, tiers.large


def split(prompts: list[Prompt], seed: int, jobs: int) -> tuple[list[Prompt], list[Prompt]]:
    """A seeded half to learn from and the other half to use, each cut to `jobs` (0: no cut)."""
    order = list(prompts)
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    learn, use = order[:half], order[half:]
    return (learn[:jobs], use[:jobs]) if jobs else (learn, use)


def settings_for(
    database_url: str, redis_url: str, base_url: str, small: str, large: str, cache: Path
) -> dict[str, Any]:
    """tierflow's settings for the run: a two-tier ladder, small the weak recorded model, large the strong."""
    from tierflow.providers.outcomes_data import LIST_PRICES

    refs = {model: f"openai:{model}" for model in (small, large)}
    return {
        "database_url": database_url,
        "broker_url": redis_url,
        "result_backend": redis_url,
        "tiers": {"small": [refs[small]], "large": [refs[large]]},
        "prices": {
            refs[m]: (LIST_PRICES[m].input_per_million, LIST_PRICES[m].output_per_million)
            for m in refs
            if m in LIST_PRICES
        },
        "openai_base_url": base_url,
        "openai_api_key": "sk-local-not-a-secret",
        "learning": LEARNING,
        "policy_ttl_s": POLICY_TTL_S,
        # no beat runs here (the phases run `tierflow reflect`), but learning is on: with an
        # interval of 0 the first policy would not explore
        "reflect_interval_s": 3600.0,
        "embeddings_cache_dir": str(cache),
    }


def environment(overrides: dict[str, Any]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIERFLOW_")}
    for key, value in overrides.items():
        env[f"TIERFLOW_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["HF_HUB_OFFLINE"] = "1"  # loopback only: the encoder is on disk
    return env


# --- the system -----------------------------------------------------------------------------------


def tierflow_command() -> str:
    return str(Path(sys.executable).with_name("tierflow"))


def workers(loop: Loop, concurrency: int) -> list[WorkerProcess]:
    """classify on threads (one encoder per process) and one worker per tier, as a user starts them."""
    shapes = {
        "classify": ["--queues", "classify", "--pool", "threads"],
        **{tier: ["--tier", tier] for tier in ("small", "large")},
    }
    made = []
    for name, selector in shapes.items():
        node = f"loop-{name}@bench"
        argv = [tierflow_command(), "worker", *selector, "--concurrency", str(concurrency)]
        argv += ["--loglevel", "WARNING", "--hostname", node]
        made.append(WorkerProcess(node, argv, loop.workdir / f"{name}.log"))
    return made


def cli(loop: Loop, *arguments: str) -> str:
    """One `tierflow` command as a user types it; its stdout. Bounded by the global deadline."""
    left = max(1.0, loop.deadline - time.monotonic())
    done = subprocess.run(
        [tierflow_command(), *arguments],
        cwd=ROOT,
        env=loop.env,
        capture_output=True,
        text=True,
        timeout=left,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"tierflow {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return done.stdout


def submit(loop: Loop, app: Any, runtime: Any, prompts: list[Prompt], tag: str) -> str:
    """Prompt jobs `<tag>-<key>` through tierflow's submit path; the batch id."""
    from tierflow.tasks.submission import submit_file

    path = loop.workdir / f"{tag}.jsonl"
    jobs = [{"id": f"{tag}-{p.key}", "kind": "prompt", "payload": {"prompt": p.text}} for p in prompts]
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    report = submit_file(app, runtime, path)
    if report.batch_id is None or report.accepted != len(jobs):
        raise RuntimeError(f"tierflow refused the batch: {report.as_dict()}")
    return report.batch_id


def run_batch(
    loop: Loop, app: Any, runtime: Any, fleet: list[WorkerProcess], prompts: list[Prompt], tag: str
) -> float:
    """Submit and wait until every job is terminal in the `jobs` table; the seconds it took."""
    started = time.perf_counter()
    batch = submit(loop, app, runtime, prompts, tag)
    query = "SELECT count(*) FROM jobs WHERE batch_id = %s AND state = ANY(%s)"
    with psycopg.connect(conninfo(loop.database_url), autocommit=True) as connection:
        while True:
            row = connection.execute(query, (batch, TERMINAL)).fetchone()
            if row is not None and row[0] >= len(prompts):
                return time.perf_counter() - started
            check_alive(fleet)
            time.sleep(0.2)


# --- labels, reflect, policy ----------------------------------------------------------------------


def write_labels(loop: Loop, prompts: list[Prompt], tag: str) -> Path:
    """Gold labels for the phase's jobs: the reference answer as `expected`, nothing more."""
    lines = [
        json.dumps({"job_id": f"{tag}-{prompt.key}", "expected": prompt.reference})
        for prompt in prompts
        if prompt.reference is not None
    ]
    path = loop.workdir / f"{tag}-labels.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def gold_labels(loop: Loop, tag: str) -> dict[str, int]:
    """How tierflow judged the phase's gold labels, against the recorded correctness of the answer."""
    query = "SELECT job_id, correct FROM feedback WHERE source = 'gold' AND job_id LIKE %s"
    with psycopg.connect(conninfo(loop.database_url)) as connection:
        judged: dict[str, bool | None] = dict(connection.execute(query, (f"{tag}-%",)).fetchall())
    return dict(Counter("correct" if value else "incorrect" for value in judged.values()))


def policy_versions(loop: Loop) -> list[dict[str, Any]]:
    query = "SELECT version, parent, active, reason, reflection FROM policy_versions ORDER BY version"
    with psycopg.connect(conninfo(loop.database_url)) as connection:
        rows = connection.execute(query).fetchall()
    keys = ("version", "parent", "active", "reason", "reflection")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def active_version(loop: Loop) -> int | None:
    """The active policy version; None before the first job seeds version 1 from the settings."""
    return next((v["version"] for v in policy_versions(loop) if v["active"]), None)


def wait_for_policy_reload() -> None:
    """Workers re-read the active version at most every policy_ttl_s."""
    time.sleep(POLICY_TTL_S * 3)


# --- the run --------------------------------------------------------------------------------------


def learn_phase(
    loop: Loop, app: Any, runtime: Any, fleet: list[WorkerProcess], learn: list[Prompt]
) -> dict[str, Any]:
    """Phase 1: the learn half under version 1, gold labels, one reflect run."""
    log(f"phase 1: {len(learn)} jobs under version {active_version(loop) or 1} ...")
    seconds = run_batch(loop, app, runtime, fleet, learn, "learn")
    figures = phase_figures(loop, learn, "learn", seconds)
    log(f"  done in {seconds:.1f}s; accuracy {figures['accuracy']:.3f}")
    recorded = cli(loop, "feedback", "--labels", str(write_labels(loop, learn, "learn"))).strip()
    counts = gold_labels(loop, "learn")
    log(f"  {recorded}")
    reflected = json.loads(cli(loop, "reflect", "--json").strip().splitlines()[-1])
    log(f"  reflect: published {reflected['published']}: {reflected['reflection']}")
    return {"figures": figures, "labels": counts, "feedback": recorded, "reflect": reflected}


def use_phase(
    loop: Loop, app: Any, runtime: Any, fleet: list[WorkerProcess], use: list[Prompt]
) -> dict[str, Any]:
    """Phase 2: the use half under the active version, then again under version 1's rules."""
    wait_for_policy_reload()
    learned_version = active_version(loop)
    log(f"phase 2: {len(use)} jobs under version {learned_version} ...")
    learned = phase_figures(loop, use, "learned", run_batch(loop, app, runtime, fleet, use, "learned"))
    log(f"  accuracy {learned['accuracy']:.3f}, cost ${learned['cost_usd']:.4f}")
    log(f"  {cli(loop, 'policy', 'rollback', '1').strip()}")
    wait_for_policy_reload()
    log(f"phase 2 again: {len(use)} prompts under version {active_version(loop)} (version 1's body) ...")
    v1 = phase_figures(loop, use, "v1", run_batch(loop, app, runtime, fleet, use, "v1"))
    log(f"  accuracy {v1['accuracy']:.3f}, cost ${v1['cost_usd']:.4f}")
    return {"learned_version": learned_version, "learned": learned, "v1": v1}


def run(args: argparse.Namespace, workdir: Path, deadline: float) -> dict[str, Any]:
    from tierflow.providers.outcomes_data import LIST_PRICES
    from tierflow.providers.server import ProviderServer
    from tierflow.tasks.runtime import runtime_for
    from tierflow.worker.app import create_app
    from tierflow.worker.settings import load_settings

    prompts, small, large = read_prompts(args.data)
    missing = [model for model in (small, large) if model not in LIST_PRICES]
    if missing:
        raise RuntimeError(f"no list price for {', '.join(missing)} (providers/outcomes_data.py)")
    learn, use = split(prompts, args.seed, args.jobs)
    flush_redis(args.redis_url)
    with (
        ProviderServer(port=0, replay_paths=[args.data], models=()) as server,
        fresh_database(args.admin_url) as url,
    ):
        overrides = settings_for(
            url, args.redis_url, server.openai_base_url, small, large, workdir / "embeddings"
        )
        loop = Loop(workdir, environment(overrides), overrides, url, small, large, deadline)
        cli(loop, "db", "upgrade")
        app = create_app(load_settings(**overrides))
        runtime = runtime_for(app)
        try:
            fleet = workers(loop, args.concurrency)
            with running_workers(fleet, loop.env, ROOT, args.redis_url, 120.0):
                phase1 = learn_phase(loop, app, runtime, fleet, learn)
                phase2 = use_phase(loop, app, runtime, fleet, use)
            versions = policy_versions(loop)
        finally:
            runtime.engine.dispose()
            app.close()
        served = server.stats()
    flush_redis(args.redis_url)
    return {
        "machine": machine(),
        "settings": {
            "jobs_per_phase": len(use),
            "seed": args.seed,
            "concurrency": args.concurrency,
            "learning": LEARNING,
        },
        "data": {
            "path": str(args.data),
            "prompts": len(prompts),
            "learn": len(learn),
            "use": len(use),
            "small": small,
            "large": large,
        },
        "phase1": phase1,
        "versions": versions,
        "phase2": phase2,
        "references": references(loop, use),
        "ratios_learned_over_v1": ratios(phase2["learned"], phase2["v1"]),
        "provider_server": {"by_model": served.get("by_model"), "by_outcome": served.get("by_outcome")},
    }


_quiet = False


def log(message: str) -> None:
    print(message, file=sys.stderr if _quiet else sys.stdout, flush=True)


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
        args.timeout, "tierflow-loop-", lambda workdir: run(args, workdir, deadline), errors
    )
    if isinstance(figures, int):
        return figures
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        print_report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
