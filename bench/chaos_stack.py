"""The chaos benchmark's system: a broker, the provider server, and `tierflow` processes.

The broker is Redis or RabbitMQ; the chord results live in a Redis database that is
never the broker's, so that flushing the broker loses messages and nothing else.
Every process runs in its own process group and is stopped by its id
(bench/services.py); a RabbitMQ virtual host made here is deleted here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.services import WorkerProcess, flush_redis, stop_workers, wait_ready

TIERS = ("small", "medium", "large")
# The tiers' models, served by the provider server, reached through the openai and anthropic SDKs.
TIER_MODELS = {
    "small": ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
    "medium": ["anthropic:claude-sonnet-4-6"],
    "large": ["openai:gpt-4o"],
}
PRICES = {"anthropic:claude-sonnet-4-6": [3.0, 15.0]}  # the one model without a built-in list price
QUEUES = ("classify", "tier.small", "tier.medium", "tier.large", "maintenance")
RABBITMQCTL_TIMEOUT_S = 60


def tierflow_command() -> str:
    return str(Path(sys.executable).with_name("tierflow"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- brokers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    """Where the messages go, how to lose them all at once, and where chords and breakers live."""

    kind: str  # "redis" or "amqp"
    url: str
    backend_url: str  # a Redis database of its own: the chord results

    def flush(self) -> dict[str, Any]:
        """Lose every message waiting in the broker: FLUSHDB of its database, or a purge of the queues."""
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url, socket_timeout=10)
            try:
                keys = int(client.dbsize())
                client.flushdb()
            finally:
                client.close()
            return {"how": "FLUSHDB", "keys": keys}
        from kombu import Connection

        purged = {}
        with Connection(self.url, connect_timeout=10) as connection:
            channel = connection.default_channel
            for queue in QUEUES:
                purged[queue] = int(channel.queue_purge(queue) or 0)
        return {"how": "queue.purge", "messages": purged}

    def settings(self) -> dict[str, str]:
        values = {"broker_url": self.url, "result_backend": self.backend_url}
        if self.kind == "amqp":
            # No Redis in the broker URL: breakers and rate limits are shared through the backend's.
            values["resilience_redis_url"] = self.backend_url
        return values

    def clean(self) -> None:
        if self.kind == "redis":
            flush_redis(self.url)
        flush_redis(self.backend_url)


def rabbitmqctl(*arguments: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", *arguments], capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(arguments)} failed: {done.stderr.strip()[-500:]}")


@contextlib.contextmanager
def broker_for(kind: str, redis_url: str, backend_url: str, amqp_url: str) -> Iterator[Broker]:
    """The broker of the run, empty; a RabbitMQ virtual host of its own, deleted at the end."""
    if redis_url == backend_url:
        raise RuntimeError("--redis-url and --backend-url must be different Redis databases")
    if kind == "redis":
        broker = Broker("redis", redis_url, backend_url)
        broker.clean()
        try:
            yield broker
        finally:
            broker.clean()
        return
    vhost = f"tierflow_chaos_{secrets.token_hex(4)}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        broker = Broker("amqp", amqp_url.rstrip("/") + "/" + vhost, backend_url)
        broker.clean()
        yield broker
        broker.clean()
    finally:
        rabbitmqctl("delete_vhost", vhost)


# --- the provider server ------------------------------------------------------------------------


@dataclass
class ProviderProcess:
    """`tierflow provider-server` in a process of its own, driven over its /_control endpoints."""

    process: WorkerProcess
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_control/{path}", data=data, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.control("stats")
                return
            except OSError:
                if self.process.exited() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the provider server did not start:\n{self.process.log_tail()}"
                    ) from None
                time.sleep(0.2)


def start_provider(workdir: Path, latency_ms: float, seed: int, env: dict[str, str]) -> ProviderProcess:
    port = free_port()
    latency = workdir / "latency.json"
    latency.write_text(json.dumps({"default": {"base_ms": latency_ms / 2, "jitter_ms": latency_ms}}))
    argv = [tierflow_command(), "provider-server", "--port", str(port), "--latency", str(latency)]
    argv += ["--seed", str(seed)]
    process = WorkerProcess("provider-server", argv, workdir / "provider-server.log")
    process.start(env, workdir)
    provider = ProviderProcess(process, port)
    provider.wait_ready(30.0)
    return provider


def provider_fault_rules(errors: float, timeouts: float) -> list[dict[str, Any]]:
    """Rules firing on `errors` of the calls (half 429 with Retry-After, half 500) and `timeouts` more.

    The server tries the rules in order, first firing wins, so each rule's probability is
    conditional on the ones before it not firing."""
    rate_limit = errors / 2
    server_error = (errors / 2) / (1 - rate_limit)
    timeout = timeouts / (1 - errors)
    return [
        {"fault": "rate_limit", "probability": rate_limit, "retry_after_s": 1.0},
        {"fault": "server_error", "probability": server_error},
        {"fault": "timeout", "probability": timeout},
    ]


# --- the tierflow processes ---------------------------------------------------------------------


@dataclass
class Fleet:
    """The workers and beat of the run, by role; a killed worker is replaced under the same role."""

    workdir: Path
    env: dict[str, str]
    broker_url: str
    argvs: dict[str, list[str]]
    nodes: dict[str, str]
    running: dict[str, WorkerProcess] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)

    def start(self, role: str) -> WorkerProcess:
        generation = self.generations.get(role, 0) + 1
        self.generations[role] = generation
        log = self.workdir / f"{role}-{generation}.log"
        process = WorkerProcess(self.nodes.get(role, role), self.argvs[role], log)
        process.start(self.env, self.workdir)
        self.running[role] = process
        return process

    def start_all(self, ready_timeout_s: float) -> None:
        for role in self.argvs:
            self.start(role)
        wait_ready([self.running[role] for role in self.nodes], self.broker_url, ready_timeout_s)

    def kill(self, role: str) -> int:
        """SIGKILL the role's process group; its pid (the worker id its beats carry ends with it)."""
        process = self.running.pop(role)
        assert process.process is not None
        pid = process.process.pid
        process.signal_group(9)
        process.reap(10.0)
        return pid

    def exited(self) -> dict[str, int]:
        """Roles whose process ended without being killed here, with the exit status."""
        return {role: code for role, p in self.running.items() if (code := p.exited()) is not None}

    def stop(self) -> None:
        stop_workers(list(self.running.values()))
        self.running.clear()


def make_fleet(workdir: Path, env: dict[str, str], broker_url: str, concurrency: dict[str, int]) -> Fleet:
    """classify, one worker per tier, maintenance (reconcile), and `tierflow beat`, as the README has them."""
    host = socket.gethostname()
    argvs: dict[str, list[str]] = {}
    nodes: dict[str, str] = {}
    shapes = {"classify": ["--queues", "classify"], "maintenance": ["--queues", "maintenance"]}
    shapes.update({tier: ["--tier", tier] for tier in TIERS})
    for role, selector in shapes.items():
        node = f"chaos-{role}@{host}"
        argv = [tierflow_command(), "worker", *selector, "--hostname", node, "--loglevel", "WARNING"]
        if concurrency.get(role):
            argv += ["--concurrency", str(concurrency[role])]
        argvs[role], nodes[role] = argv, node
    argvs["beat"] = [tierflow_command(), "beat", "--schedule", str(workdir / "beat-schedule")]
    argvs["beat"] += ["--loglevel", "WARNING"]
    return Fleet(workdir, env, broker_url, argvs, nodes)


def environment(settings: dict[str, Any]) -> dict[str, str]:
    """The processes' environment: this one without any TIERFLOW_ variable, plus the run's settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIERFLOW_")}
    for key, value in settings.items():
        env[f"TIERFLOW_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(env: dict[str, str], cwd: Path, timeout_s: float, *arguments: str) -> str:
    done = subprocess.run(
        [tierflow_command(), *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"tierflow {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return done.stdout
