"""The OpenAI Batch API path against `tierflow submit`, for the same prompts, in one run.

    python bench/api_batch.py [--prompts 300] [--concurrency 16] [--json]

One fresh PostgreSQL database (dropped at the end, always), one Redis database (flushed),
the local provider server in this process as the models (through the real SDKs), one
`tierflow worker` on every queue and `tierflow serve`, all on loopback. After a few
warm-up jobs, the same N prompts go once through `tierflow submit FILE --wait` and once
through the official `openai` SDK: upload, create the batch, poll until completed,
download the output file. Each arm is timed from its first call to its last answer; the
figure that compares them is the ratio of their throughputs.

Bounded by --timeout, after which everything is torn down and the benchmark exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.services import (  # noqa: E402
    WorkerFailed,
    WorkerProcess,
    check_alive,
    flush_redis,
    fresh_database,
    run_bounded,
    running_workers,
)
from tierflow.providers.server import ProviderServer  # noqa: E402
from tierflow.worker.app import ALL_QUEUES  # noqa: E402

TIERFLOW = str(Path(sys.executable).with_name("tierflow"))
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/13"
TIERS = {
    "small": ["openai:gpt-4o-mini"],
    "medium": ["anthropic:claude-sonnet-4-6"],
    "large": ["openai:gpt-4o"],
}
STRENGTHS = {"gpt-4o-mini": 0.6, "claude-sonnet-4-6": 0.8, "gpt-4o": 0.97}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--batch-first", action="store_true", help="Run the Batch API arm first")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def prompts(count: int) -> list[str]:
    return [f"What is {n} * {n % 17 + 2}?" for n in range(1, count + 1)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(database_url: str, redis_url: str, server: ProviderServer, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TIERFLOW_DATABASE_URL=database_url,
        TIERFLOW_BROKER_URL=redis_url,
        TIERFLOW_RESULT_BACKEND=redis_url,
        TIERFLOW_TIERS=json.dumps(TIERS),
        TIERFLOW_OPENAI_BASE_URL=server.openai_base_url,
        TIERFLOW_ANTHROPIC_BASE_URL=server.anthropic_base_url,
        TIERFLOW_OPENAI_API_KEY="sk-bench-not-a-secret",
        TIERFLOW_ANTHROPIC_API_KEY="sk-ant-bench-not-a-secret",
        TIERFLOW_REFLECT_INTERVAL_S="0",
        TIERFLOW_API_FILES_DIR=str(workdir / "files"),
        TIERFLOW_LOG_LEVEL="WARNING",
    )
    return env


def tierflow(env: dict[str, str], workdir: Path, *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [TIERFLOW, *args], env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"tierflow {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def submit_arm(env: dict[str, str], workdir: Path, texts: list[str], tag: str) -> dict[str, Any]:
    path = workdir / f"{tag}.jsonl"
    lines = [
        json.dumps({"id": f"{tag}-{n}", "kind": "prompt", "payload": {"prompt": t}})
        for n, t in enumerate(texts)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.monotonic()
    tierflow(env, workdir, "submit", str(path), "--wait", "--json")
    seconds = time.monotonic() - started
    return {"path": "tierflow submit --wait", "requests": len(texts), "seconds": round(seconds, 2)}


def batch_arm(base_url: str, texts: list[str]) -> dict[str, Any]:
    client = openai.OpenAI(base_url=base_url, api_key="local")
    lines = [
        {
            "custom_id": f"p{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "tierflow/auto", "messages": [{"role": "user", "content": text}]},
        }
        for n, text in enumerate(texts)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    started = time.monotonic()
    upload = client.files.create(file=("bench.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "cancelled"):
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    if batch.status != "completed" or batch.output_file_id is None:
        raise RuntimeError(f"batch {batch.id} ended {batch.status}: {batch.errors}")
    answered = [line for line in client.files.content(batch.output_file_id).text.split("\n") if line]
    seconds = time.monotonic() - started
    return {
        "path": "openai SDK Batch API",
        "requests": len(texts),
        "answered": len(answered),
        "seconds": round(seconds, 2),
    }


def wait_serving(base: str, serve: WorkerProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_alive([serve])
        try:
            with urllib.request.urlopen(f"{base}/openapi.json", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise WorkerFailed(f"tierflow serve not answering on {base}")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    texts = prompts(args.prompts)
    flush_redis(args.redis_url)
    with (
        fresh_database(args.admin_url) as database_url,
        ProviderServer(port=0, models=list(STRENGTHS), strengths=STRENGTHS) as server,
    ):
        env = environment(database_url, args.redis_url, server, workdir)
        tierflow(env, workdir, "db", "upgrade")
        host = socket.gethostname()
        queues = ",".join(ALL_QUEUES)
        worker_argv = [TIERFLOW, "worker", "--queues", queues, "--concurrency", str(args.concurrency)]
        worker = WorkerProcess(
            f"bench-api@{host}", [*worker_argv, "--hostname", "bench-api@%h"], workdir / "w.log"
        )
        with running_workers([worker], env, workdir, args.redis_url, 90):
            port = free_port()
            serve = WorkerProcess("serve", [TIERFLOW, "serve", "--port", str(port)], workdir / "serve.log")
            serve.start(env, workdir)
            try:
                wait_serving(f"http://127.0.0.1:{port}", serve)
                submit_arm(env, workdir, prompts(8), "warmup")
                if args.batch_first:
                    batched = batch_arm(f"http://127.0.0.1:{port}/v1", texts)
                submitted = submit_arm(env, workdir, texts, "submit")
                if not args.batch_first:
                    batched = batch_arm(f"http://127.0.0.1:{port}/v1", texts)
            finally:
                serve.signal_group(15)
                serve.reap(15)
    flush_redis(args.redis_url)
    for arm in (submitted, batched):
        arm["requests_per_s"] = round(arm["requests"] / arm["seconds"], 2)
    ratio = batched["requests_per_s"] / submitted["requests_per_s"]
    return {
        "prompts": args.prompts,
        "concurrency": args.concurrency,
        "order": "batch first" if args.batch_first else "submit first",
        "arms": [submitted, batched],
        "ratio": ratio,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    errors = (WorkerFailed, RuntimeError, psycopg.OperationalError, redis.RedisError, openai.OpenAIError)
    figures = run_bounded(args.timeout, "tierflow-bench-api-", lambda workdir: run(args, workdir), errors)
    if isinstance(figures, int):
        return figures
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"{figures['prompts']} prompts, one worker on every queue (--concurrency {figures['concurrency']}), "
        f"{figures['order']}"
    )
    for arm in figures["arms"]:
        print(f"  {arm['path']:<24} {arm['seconds']:>8.2f} s  {arm['requests_per_s']:>8.2f} requests/s")
    print(f"  Batch API / submit throughput: {figures['ratio']:.2f}x  (wall {figures['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
