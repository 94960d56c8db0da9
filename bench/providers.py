"""Provider-layer overhead: our OpenAIProvider adapter against the bare openai SDK, side by side.

    python bench/providers.py [--seconds 10] [--threads 8] [--repeats 1]
                              [--latency-threads 200] [--latency-ms 200] [--json]

The local provider server runs as a separate process (`tierflow provider-server
--port P`), on loopback only, and is terminated at the end whatever happens.

1. Overhead, server at zero latency: calls/s through `providers.openai.OpenAIProvider`
   and through a bare `openai.OpenAI` client sending the same request, the same
   number of threads, arms interleaved (bare, adapter, adapter, bare, ...); the
   ratio adapter/bare is the issue's figure (goal >= 0.95). Client and server CPU
   per call tell where the time goes.
2. Server capacity: the same server hammered by a minimal keep-alive http.client
   loop, so that what limits the arms above can be told apart from the SDK's cost.
3. Latency: a second server with 200 ms latency on every call; 200 threads through
   one shared adapter (as a tier worker's thread pool would) for --seconds; achieved
   calls/s against the ceiling threads / latency (1,000 calls/s), as a percentage;
   then the bare SDK and the raw client the same way, to show which side limits it.

Client and server share this machine's cores: every figure is for this machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from bench.providers_load import HOST, ArmResult, ServerProcess, run_arm  # noqa: E402
from tierflow.providers.base import CompletionRequest  # noqa: E402
from tierflow.providers.openai import OpenAIProvider  # noqa: E402
from tierflow.providers.pricing import Price  # noqa: E402

MODEL = "gpt-4o-mini"
SYSTEM = "You answer questions.\nTask: answer"
USER = "What is 12 * 7?"
REQUEST = CompletionRequest(system=SYSTEM, user=USER)
PRICES = {f"local:{MODEL}": Price(0.15, 0.60)}
API_KEY = "sk-bench-unused"
WARMUP_CALLS = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each timed arm (default 10)")
    parser.add_argument("--threads", type=int, default=8, help="client threads, overhead arms (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each overhead arm (default 1)")
    parser.add_argument("--capacity-threads", type=int, default=16, help="raw client threads (default 16)")
    parser.add_argument("--latency-threads", type=int, default=200, help="threads, latency arm (default 200)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="server latency (default 200)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 120:
        parser.error("--seconds must be in (0, 120]")
    for name in ("threads", "repeats", "capacity_threads", "latency_threads"):
        if not 1 <= getattr(args, name) <= 500:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and 500")
    if args.latency_ms <= 0:
        parser.error("--latency-ms must be > 0")
    return args


def log(args: argparse.Namespace, message: str) -> None:
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def bare_call(client: openai.OpenAI) -> Callable[[], object]:
    """The adapter's request through the SDK alone, reading the same fields the adapter reads."""
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]

    def call() -> object:
        completion = client.chat.completions.create(
            model=MODEL, messages=messages, temperature=0.0, max_completion_tokens=400, timeout=30.0
        )
        usage = completion.usage
        assert usage is not None and completion.choices[0].message.content
        return usage.prompt_tokens + usage.completion_tokens

    return call


def adapter_call(provider: OpenAIProvider) -> Callable[[], object]:
    return lambda: provider.complete(MODEL, REQUEST)


def raw_call(port: int) -> Callable[[], object]:
    """One keep-alive http.client connection per thread: about the least a Python client can do."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": USER}]}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}
    local = threading.local()

    def call() -> object:
        if getattr(local, "connection", None) is None:
            local.connection = http.client.HTTPConnection(HOST, port, timeout=30)
        try:
            local.connection.request("POST", "/v1/chat/completions", body, headers)
            response = local.connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            local.connection.close()
            local.connection = None
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return payload

    return call


def warm_up(*calls: Callable[[], object]) -> None:
    for call in calls:
        for _ in range(WARMUP_CALLS):
            call()


def overhead_arms(args: argparse.Namespace, server: ServerProcess) -> dict[str, list[ArmResult]]:
    """Bare SDK and adapter against one server at zero latency, interleaved A B B A ..."""
    client = openai.OpenAI(base_url=server.openai_base_url, api_key=API_KEY, max_retries=0, timeout=30.0)
    provider = OpenAIProvider(api_key=API_KEY, prices=PRICES, base_url=server.openai_base_url, name="local")
    arms = {"bare openai SDK": bare_call(client), "OpenAIProvider": adapter_call(provider)}
    results: dict[str, list[ArmResult]] = {name: [] for name in arms}
    try:
        warm_up(*arms.values())
        for repeat in range(args.repeats):
            order = list(arms) if repeat % 2 == 0 else list(arms)[::-1]
            for name in order:
                log(args, f"  {name}: {args.threads} threads, {args.seconds:g} s ...")
                results[name].append(run_arm(name, arms[name], args.threads, args.seconds, server))
    finally:
        client.close()
        provider.close()
    return results


def capacity_arm(args: argparse.Namespace, server: ServerProcess) -> ArmResult:
    call = raw_call(server.port)
    warm_up(call)
    log(args, f"  raw http.client: {args.capacity_threads} threads, {args.seconds:g} s ...")
    return run_arm("raw http.client", call, args.capacity_threads, args.seconds, server)


def latency_arms(args: argparse.Namespace, server: ServerProcess) -> list[ArmResult]:
    """The adapter, the bare SDK and the raw client, each with many threads against a slow server."""
    client = openai.OpenAI(base_url=server.openai_base_url, api_key=API_KEY, max_retries=0, timeout=30.0)
    provider = OpenAIProvider(api_key=API_KEY, prices=PRICES, base_url=server.openai_base_url, name="local")
    arms = {
        "OpenAIProvider": adapter_call(provider),
        "bare openai SDK": bare_call(client),
        "raw http.client": raw_call(server.port),
    }
    results = []
    try:
        for name, call in arms.items():
            call()
            label = f"{name} @{args.latency_ms:g} ms"
            log(args, f"  {label}: {args.latency_threads} threads, {args.seconds:g} s ...")
            results.append(run_arm(label, call, args.latency_threads, args.seconds, server))
    finally:
        client.close()
        provider.close()
    return results


def median_of(runs: list[ArmResult]) -> dict[str, Any]:
    """The run with the median calls/s stands for the arm; every run's calls/s is listed."""
    ordered = sorted(runs, key=lambda run: run.calls_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    return {**chosen.as_dict(), "runs_calls_per_s": [round(run.calls_per_s, 1) for run in runs]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    log(args, "provider server at zero latency (separate process):")
    with ServerProcess() as server:
        results = overhead_arms(args, server)
        capacity = capacity_arm(args, server)
    log(args, f"provider server at {args.latency_ms:g} ms latency (separate process):")
    with ServerProcess(latency_ms=args.latency_ms) as slow:
        latency, latency_bare, latency_raw = latency_arms(args, slow)
    bare, adapter = (median_of(runs) for runs in results.values())
    ceiling = args.latency_threads / (args.latency_ms / 1000)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "openai": openai.__version__}
    return {
        "machine": machine,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "overhead": {
            "arms": [bare, adapter],
            "calls_per_s_ratio": adapter["calls_per_s"] / bare["calls_per_s"],
            "client_cpu_ratio": adapter["client_cpu_ms_per_call"] / bare["client_cpu_ms_per_call"],
            "goal": ">= 0.95",
        },
        "server_capacity": capacity.as_dict(),
        "latency": {
            **latency.as_dict(),
            "ceiling_calls_per_s": ceiling,
            "share_of_ceiling": latency.calls_per_s / ceiling,
            "goal": ">= 0.6, ahead of the bare SDK",
            "bare_sdk": {**latency_bare.as_dict(), "share_of_ceiling": latency_bare.calls_per_s / ceiling},
            "raw_client": {**latency_raw.as_dict(), "share_of_ceiling": latency_raw.calls_per_s / ceiling},
        },
    }


COLUMNS = [
    ("arm", "{:<26}"),
    ("threads", "{:>7}"),
    ("seconds", "{:>7.1f}"),
    ("calls", "{:>7}"),
    ("errors", "{:>6}"),
    ("calls_per_s", "{:>8.1f}"),
    ("p50_ms", "{:>7.2f}"),
    ("p99_ms", "{:>8.2f}"),
    ("client_cpu_ms_per_call", "{:>11.3f}"),
    ("server_cpu_ms_per_call", "{:>11.3f}"),
]
HEADER = (
    "arm                        threads seconds   calls errors  calls/s  p50 ms   p99 ms"
    "  client CPU  server CPU"
)


def row(arm: dict[str, Any]) -> str:
    return " ".join(form.format(arm[key]) for key, form in COLUMNS)


def print_report(report: dict[str, Any]) -> None:
    overhead, capacity, latency = report["overhead"], report["server_capacity"], report["latency"]
    print()
    print(f"machine: {report['machine']}")
    print("CPU columns: milliseconds of CPU per call (client = this process, server = the server process)")
    print(HEADER)
    arms = [*overhead["arms"], capacity, latency, latency["bare_sdk"], latency["raw_client"]]
    for arm in arms:
        print(row(arm))
    print()
    print(f"adapter / bare SDK, calls/s:        {overhead['calls_per_s_ratio']:.3f}   (goal >= 0.95)")
    print(f"adapter / bare SDK, client CPU/call: {overhead['client_cpu_ratio']:.3f}")
    print(
        f"server alone (raw client):          {capacity['calls_per_s']:.0f} calls/s, "
        f"{capacity['server_cpu_ms_per_call']:.3f} ms server CPU per call"
    )
    print(
        f"{latency['threads']} threads at {report['settings']['latency_ms']:g} ms: "
        f"{latency['calls_per_s']:.0f} calls/s of a {latency['ceiling_calls_per_s']:.0f} calls/s ceiling "
        f"= {latency['share_of_ceiling']:.1%}   (goal >= 60%, ahead of the bare SDK; bare SDK "
        f"{latency['bare_sdk']['share_of_ceiling']:.1%}, "
        f"raw client {latency['raw_client']['share_of_ceiling']:.1%})"
    )
    for arm in arms:
        if arm["errors"]:
            print(f"{arm['arm']}: {arm['errors']} errors, first: {arm['first_error']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
