"""The official `openai` SDK drives tierflow's Batch API end to end.

`tierflow serve` (a real uvicorn process on loopback), a `tierflow worker` on every queue,
the real PostgreSQL and Redis, and the local provider server as the models. The SDK is
used unchanged, with only `base_url` and `api_key` set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import Engine, func, select

from tests.conftest import ROOT
from tests.e2e.api_support import (
    MODELS,
    STRENGTHS,
    chat_line,
    create_key,
    free_port,
    fresh_stack,
    http,
    start_service,
    write_lines,
)
from tests.e2e.conftest import TIERFLOW, Processes
from tierflow.providers.server import ProviderServer
from tierflow.providers.server.faults import Latency, LatencySpec
from tierflow.store.api_keys import hash_key
from tierflow.store.models import ApiKey, ExpertResult, Job, Result
from tierflow.worker.app import TierflowCelery

# Three processes and a model server on a shared machine: minutes, not seconds, under load.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ENDED = {"completed", "failed", "cancelled", "expired"}
SERVED = re.compile(r"^tierflow/(small|medium|large):(gpt-4o-mini|claude-sonnet-4-6|gpt-4o)$")
PROMPTS = {f"q{n}": f"What is {n} * {n + 3}?" for n in range(1, 7)}


@pytest.fixture()
def provider_server() -> Iterator[ProviderServer]:
    with ProviderServer(port=0, models=MODELS, strengths=STRENGTHS) as server:
        yield server


def wait_ended(client: openai.OpenAI, batch_id: str, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in ENDED:
            return batch, seen
        time.sleep(0.3)
    raise AssertionError(f"batch {batch_id} still {seen[-1]} after {timeout_s}s (went through {seen})")


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.split("\n") if line]


def check_output_line(line: dict[str, Any], store: Engine) -> None:
    """The body names the tier and model that answered; usage and cost are the store's."""
    body = line["response"]["body"]
    job_id = line["response"]["request_id"]
    assert line["response"]["status_code"] == 200 and line["error"] is None
    served = SERVED.match(body["model"])
    assert served, body["model"]
    with store.connect() as connection:
        tokens_in, tokens_out, cost = connection.execute(
            select(
                func.sum(ExpertResult.input_tokens),
                func.sum(ExpertResult.output_tokens),
                func.sum(ExpertResult.cost_usd),
            ).where(ExpertResult.job_id == job_id)
        ).one()
        tier, output = connection.execute(
            select(Result.tier, Result.output).where(Result.job_id == job_id)
        ).one()
    assert served.group(1) == tier
    assert body["usage"] == {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }
    assert body["tierflow"]["cost_usd"] == pytest.approx(cost, rel=1e-9) and cost > 0
    assert body["choices"][0]["message"]["content"] == output["answer"]


def test_the_openai_sdk_runs_a_batch_through_tierflow_and_cancels_another(
    processes: Processes,
    control_app: TierflowCelery,
    provider_server: ProviderServer,
    store_engine: Engine,
    tmp_path: Path,
) -> None:
    fresh_stack(processes, provider_server, store_engine, tmp_path)
    key = create_key(processes, "acme")
    client = openai.OpenAI(base_url=start_service(processes, control_app), api_key=key)

    lines = [chat_line(custom_id, prompt) for custom_id, prompt in PROMPTS.items()]
    upload = client.files.create(file=write_lines(tmp_path / "in.jsonl", lines).open("rb"), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes == (tmp_path / "in.jsonl").stat().st_size
    assert client.files.content(upload.id).text == (tmp_path / "in.jsonl").read_text()
    created = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "e2e"},
    )
    assert created.status == "validating"
    batch, seen = wait_ended(client, created.id)
    assert batch.status == "completed", (batch, seen)
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    counts = batch.request_counts
    assert counts is not None and counts.total == len(PROMPTS)
    output, errors = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert counts.completed == len(output) and counts.failed == len(errors)
    assert sorted(line["custom_id"] for line in output + errors) == sorted(PROMPTS)
    assert len(output) >= len(PROMPTS) - 1, errors  # the models answer these; one may be held for review
    for line in output:
        check_output_line(line, store_engine)
    assert batch.metadata == {"run": "e2e"}
    assert created.id in [b.id for b in client.batches.list(limit=10).data]

    # a slow batch, cancelled while it runs: what had not ended goes to the error file
    provider_server.set_latency(LatencySpec(default=Latency(base_ms=1500)))
    slow = [chat_line(f"s{n}", f"What is {n} + {n}?") for n in range(20)]
    upload = client.files.create(file=write_lines(tmp_path / "slow.jsonl", slow).open("rb"), purpose="batch")
    running = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while client.batches.retrieve(running.id).status == "validating":
        time.sleep(0.1)
    cancelling = client.batches.cancel(running.id)
    assert cancelling.status in {"cancelling", "cancelled"}
    cancelled, _ = wait_ended(client, running.id, 60)
    provider_server.set_latency(LatencySpec())
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    stopped = read_lines(client, cancelled.error_file_id)
    assert stopped and {line["error"]["code"] for line in stopped} <= {"batch_cancelled", "job_failed"}
    assert any(line["error"]["code"] == "batch_cancelled" for line in stopped)
    assert cancelled.request_counts is not None and cancelled.request_counts.total == 20


def test_bad_batches_fail_in_validating_and_bad_calls_are_refused(
    processes: Processes,
    control_app: TierflowCelery,
    provider_server: ProviderServer,
    store_engine: Engine,
    tmp_path: Path,
) -> None:
    fresh_stack(processes, provider_server, store_engine, tmp_path, TIERFLOW_API_MAX_UPLOAD_BYTES="20000")
    refused = subprocess.run(
        [str(TIERFLOW), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=processes.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "no API key exists" in refused.stderr
    key = create_key(processes, "acme")
    base = start_service(processes, control_app)
    client = openai.OpenAI(base_url=base, api_key=key)
    with store_engine.connect() as connection:
        jobs_before = connection.execute(select(func.count()).select_from(Job)).scalar_one()

    bad = [
        chat_line("ok", "What is 2 + 2?"),
        "{not json",
        {k: v for k, v in chat_line("x", "hi").items() if k != "custom_id"},
        chat_line("ok", "What is 3 + 3?"),
        {**chat_line("e", "hi"), "url": "/v1/embeddings"},
        {**chat_line("m", "hi"), "body": {"model": "tierflow/auto"}},
    ]
    upload = client.files.create(file=write_lines(tmp_path / "bad.jsonl", bad).open("rb"), purpose="batch")
    created = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed, _ = wait_ended(client, created.id, 30)
    assert failed.status == "failed" and failed.failed_at and failed.in_progress_at is None
    assert failed.errors is not None and failed.errors.data is not None
    found = [(e.line, e.param) for e in failed.errors.data]
    assert found == [(2, "<line>"), (3, "custom_id"), (4, "custom_id"), (5, "url"), (6, "body.messages")]
    assert all(e.message for e in failed.errors.data)
    with store_engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Job)).scalar_one() == jobs_before

    big = tmp_path / "big.jsonl"
    write_lines(big, [chat_line(f"b{n}", "x" * 400) for n in range(100)])
    with pytest.raises(openai.APIStatusError) as too_large:
        client.files.create(file=big.open("rb"), purpose="batch")
    assert too_large.value.status_code == 413
    assert not list((tmp_path / "files").glob("*.partial")), "a refused upload leaves nothing"

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="tf-not-a-key").batches.list()
    with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
        client.chat.completions.create(
            model="tierflow/auto", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    answer = client.chat.completions.create(
        model="tierflow/auto", messages=[{"role": "user", "content": "What is 12 * 12?"}]
    )
    assert SERVED.match(answer.model) and answer.choices[0].message.content == "144"
    assert answer.usage is not None and answer.usage.total_tokens > 0

    with store_engine.connect() as connection:
        stored = connection.execute(select(ApiKey.key_hash, ApiKey.hint)).all()
    assert (hash_key(key), key[:7] + "...") in stored and all(key not in row for row in stored)
    listed = processes.run("keys", "list").stdout
    assert key not in listed and "acme" in listed
    key_id = next(word for word in listed.split() if word.startswith("key_"))
    processes.run("keys", "revoke", key_id)
    assert http("GET", f"{base}/batches", key)[0] == 401


def test_each_key_sees_only_its_tenants_objects_and_the_native_endpoints_serve_it(
    processes: Processes,
    control_app: TierflowCelery,
    provider_server: ProviderServer,
    store_engine: Engine,
    tmp_path: Path,
) -> None:
    fresh_stack(processes, provider_server, store_engine, tmp_path)
    key_a, key_b = create_key(processes, "tenant-a"), create_key(processes, "tenant-b")
    base = start_service(processes, control_app)
    a, b = openai.OpenAI(base_url=base, api_key=key_a), openai.OpenAI(base_url=base, api_key=key_b)

    upload = a.files.create(
        file=write_lines(tmp_path / "a.jsonl", [chat_line("only", "What is 9 * 9?")]).open("rb"),
        purpose="batch",
    )
    batch_a = a.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    jobs = [{"id": "n1", "kind": "prompt", "payload": {"prompt": "What is 5 * 5?"}}]
    status, submitted = http("POST", f"{base}/tierflow/batches", key_a, {"jobs": jobs})
    assert status == 200 and submitted["accepted"] == 1, submitted
    native = submitted["batch_id"]
    done, _ = wait_ended(a, batch_a.id)
    assert done.status == "completed"

    assert batch_a.id not in [x.id for x in b.batches.list().data]
    assert batch_a.id in [x.id for x in a.batches.list().data]
    for call in (
        lambda: b.batches.retrieve(batch_a.id),
        lambda: b.batches.cancel(batch_a.id),
        lambda: b.files.retrieve(upload.id),
        lambda: b.files.content(done.output_file_id or ""),
        lambda: b.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
        lambda: a.batches.retrieve("batch_000000000000000000000000"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    job_id = "tenant-a.n1"  # a tenant's job ids are its own: prefixed with the tenant
    for path in (
        f"tierflow/batches/{native}",
        f"tierflow/batches/{native}/results",
        f"tierflow/jobs/{job_id}",
    ):
        assert http("GET", f"{base}/{path}", key_b)[0] == 404, path
    assert http("POST", f"{base}/tierflow/jobs/{job_id}/feedback", key_b, {"correct": True})[0] == 404

    deadline = time.monotonic() + 120
    while http("GET", f"{base}/tierflow/batches/{native}", key_a)[1]["by_state"].get("succeeded") != 1:
        assert time.monotonic() < deadline, "the native batch did not finish"
        time.sleep(0.3)
    status, rows = http("GET", f"{base}/tierflow/batches/{native}/results", key_a)
    assert (
        status == 200
        and isinstance(rows, dict)
        and rows["job_id"] == job_id
        and rows["output"]["answer"] == "25"
    )
    status, table = http("GET", f"{base}/tierflow/batches/{native}/results?format=csv", key_a)
    assert status == 200 and table.split("\n")[0].startswith("job_id,kind,state,tier_path")
    status, trace = http("GET", f"{base}/tierflow/jobs/{job_id}", key_a)
    assert status == 200 and trace["attempts"] and trace["state"] == "succeeded"
    assert (
        http("POST", f"{base}/tierflow/jobs/{job_id}/feedback", key_a, {"correct": True, "note": "ok"})[0]
        == 200
    )
    assert http("GET", f"{base}/tierflow/jobs/{job_id}", key_a)[1]["feedback"][-1]["note"] == "ok"
    assert http("GET", f"{base}/tierflow/reviews", key_b)[1]["data"] == []
    again = http("POST", f"{base}/tierflow/batches", key_a, {"jobs": jobs})[1]
    assert (again["batch_id"], again["accepted"], again["duplicates"]) == (native, 0, 1)
    readme_example_runs(base, key_a, tmp_path)
    metrics_are_served(processes, base, key_a)


def metrics_are_served(processes: Processes, base: str, key: str) -> None:
    """/metrics on the API (behind the key) and `tierflow metrics --port` count the same jobs."""
    status, text = http("GET", base.removesuffix("/v1") + "/metrics", key)
    assert status == 200 and 'tierflow_http_requests_total{method="POST",route="/v1/batches"' in text
    port = free_port()
    processes.start("metrics", "metrics", "--port", str(port))
    deadline = time.monotonic() + 30
    while True:
        processes.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                exported = response.read().decode()
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "tierflow metrics did not answer"
            time.sleep(0.2)
    for scraped in (text, exported):
        jobs = [line for line in scraped.split("\n") if line.startswith("tierflow_jobs{")]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in jobs if 'state="succeeded"' in line) >= 5
        assert "tierflow_cost_usd_total{" in scraped and "tierflow_queue_length{" in scraped


def readme_example_runs(base: str, key: str, tmp_path: Path) -> None:
    """The README's openai SDK batch example, as written but for the port."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = readme.split("## HTTP API\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "http://127.0.0.1:8000/v1" in code
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERFLOW_", "OPENAI_"))}
    env["OPENAI_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-c", code.replace("http://127.0.0.1:8000/v1", base)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "readme-example.out").write_text(done.stdout)
    print(done.stdout)
    first, *answers = done.stdout.strip().split("\n")
    assert first.startswith("completed") and "total=3" in first
    assert [line.split()[0] for line in answers] == ["q1", "q2", "q3"]
    assert all(SERVED.match(line.split()[1]) for line in answers), answers
    assert [line.split()[2] for line in answers] == ["7", "14", "21"]
