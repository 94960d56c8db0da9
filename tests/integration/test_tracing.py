"""OpenTelemetry traces (the otel extra): a batch run by a real worker through the real SDKs to
the local provider server leaves spans for its submission, its Celery tasks, its SQL statements
and its model calls, carrying the batch and job ids, and no key anywhere in them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import service_settings
from tests.integration.conftest import running_worker
from tierflow.client import Client
from tierflow.providers.server import ProviderServer
from tierflow.worker import tracing

OPENAI_KEY = "sk-trace-secret-openai-9Tz4"
ANTHROPIC_KEY = "sk-ant-trace-secret-3Qw8"
TIERS = {
    "small": ["openai:gpt-4o-mini"],
    "medium": ["anthropic:claude-sonnet-4-6"],
    "large": ["openai:gpt-4o"],
}
JOBS = [
    {"id": "tr-1", "kind": "prompt", "payload": {"prompt": "What is 5 * 5?"}},
    {"id": "tr-2", "kind": "prompt", "payload": {"prompt": "What is 7 + 8?"}, "metadata": {"tier": "medium"}},
]


@pytest.fixture()
def server() -> Iterator[ProviderServer]:
    models = ["gpt-4o-mini", "claude-sonnet-4-6", "gpt-4o"]
    with ProviderServer(port=0, models=models, api_key=None) as served:
        yield served


def _everything(span: object) -> str:
    """A span as text: its name, attributes, events and resource, to search for secrets."""
    body = json.loads(span.to_json())  # type: ignore[attr-defined]
    return json.dumps(body)


@pytest.mark.integration
def test_spans_carry_job_and_batch_ids_and_no_key(db: object, pg_url: str, redis_url: str, server) -> None:  # type: ignore[no-untyped-def]
    exporter = InMemorySpanExporter()
    settings = service_settings(
        pg_url,
        redis_url,
        tiers=TIERS,
        openai_base_url=server.openai_base_url,
        anthropic_base_url=server.anthropic_base_url,
        openai_api_key=OPENAI_KEY,
        anthropic_api_key=ANTHROPIC_KEY,
    )
    client = Client.from_settings(**settings)
    assert tracing.install(client.settings, exporter)
    try:
        with client, running_worker(client.app):
            batch = client.submit(JOBS)
            batch.wait(timeout=120)
    finally:
        client.close()
    spans = exporter.get_finished_spans()
    exporter.shutdown()  # the provider stays for this process; later spans are not kept
    by_name: dict[str, list[object]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    submit = by_name["tierflow.submit"][0]
    assert submit.attributes["tierflow.batch_id"] == batch.batch_id  # type: ignore[attr-defined]

    tasks = [s for s in spans if s.name.startswith("run/tierflow.")]
    assert {s.name for s in tasks} >= {
        "run/tierflow.classify",
        "run/tierflow.expert",
        "run/tierflow.aggregate",
    }
    assert {s.attributes.get("tierflow.job_id") for s in tasks} == {"tr-1", "tr-2"}

    calls = by_name["tierflow.model_call"]
    assert {(c.attributes["tierflow.job_id"], c.attributes["gen_ai.request.model"]) for c in calls} >= {
        ("tr-1", "gpt-4o-mini"),
        ("tr-2", "claude-sonnet-4-6"),  # pinned to medium
    }
    assert all(
        c.attributes["tierflow.outcome"] == "ok" and c.attributes["gen_ai.usage.input_tokens"] > 0
        for c in calls
    )
    # each call's span is a child of its task's span, in the task's trace
    task_spans = {s.context.span_id: s for s in tasks}
    assert all(c.parent is not None and c.parent.span_id in task_spans for c in calls)

    statements = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert statements and any(s.attributes.get("tierflow.job_id") == "tr-1" for s in statements)

    for span in spans:
        text = _everything(span)
        assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text, span.name
        assert "What is 5 * 5" not in text, f"a prompt in span {span.name}"
