"""Shared pieces of the HTTP API's end-to-end tests: the provider server as the models, a worker
and `tierflow serve` started as a user starts them, keys made with `tierflow keys create`."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.e2e.compose_runner import truncate_store
from tests.e2e.conftest import Processes, wait_for_workers
from tierflow.providers.server import ProviderServer
from tierflow.worker.app import ALL_QUEUES, TierflowCelery

TIERS = {
    "small": ["openai:gpt-4o-mini"],
    "medium": ["anthropic:claude-sonnet-4-6"],
    "large": ["openai:gpt-4o"],
}
MODELS = ["gpt-4o-mini", "claude-sonnet-4-6", "gpt-4o"]
STRENGTHS = {"gpt-4o-mini": 0.6, "claude-sonnet-4-6": 0.8, "gpt-4o": 0.97}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def chat_line(custom_id: str, prompt: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tierflow/auto", "messages": [{"role": "user", "content": prompt}]},
    }


def write_lines(path: Path, records: list[Any]) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")
    return path


def configure(processes: Processes, server: ProviderServer, tmp_path: Path, **extra: str) -> None:
    """The tier map on the provider server's models, for every process started after this."""
    processes.env.update(
        TIERFLOW_TIERS=json.dumps(TIERS),
        TIERFLOW_OPENAI_BASE_URL=server.openai_base_url,
        TIERFLOW_ANTHROPIC_BASE_URL=server.anthropic_base_url,
        TIERFLOW_OPENAI_API_KEY="sk-test-not-a-secret",
        TIERFLOW_ANTHROPIC_API_KEY="sk-ant-test-not-a-secret",
        TIERFLOW_API_FILES_DIR=str(tmp_path / "files"),
        TIERFLOW_REFLECT_INTERVAL_S="0",
        **extra,
    )


def fresh_stack(
    processes: Processes, server: ProviderServer, store_engine: Engine, tmp_path: Path, **extra: str
) -> None:
    """`configure`, then the session's database migrated and emptied (a policy seeded by another
    test names other models)."""
    configure(processes, server, tmp_path, **extra)
    processes.run("db", "upgrade")
    truncate_store(store_engine)


def create_key(processes: Processes, tenant: str) -> str:
    done = processes.run("keys", "create", "--tenant", tenant)
    return done.stdout.rstrip("\n").split("\n")[-1]


def start_service(processes: Processes, control_app: TierflowCelery) -> str:
    """One worker on every queue and `tierflow serve`, both answering; the API's base URL."""
    processes.start(
        "worker", "worker", "--queues", ",".join(ALL_QUEUES), "--concurrency", "16", "--hostname", "api-w@%h"
    )
    port = free_port()
    processes.start("serve", "serve", "--port", str(port), "--log-level", "warning")
    wait_for_workers(control_app, processes, {f"api-w@{socket.gethostname()}"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        processes.check_alive()
        try:
            with urllib.request.urlopen(f"{base}/openapi.json", timeout=2):
                return f"{base}/v1"
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"tierflow serve not answering on {base}\n{processes.tails()}")


def http(method: str, url: str, key: str | None = None, body: Any = None) -> tuple[int, Any]:
    """A plain HTTP request for tierflow's own endpoints (the OpenAI ones go through the SDK)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw
