"""The Prometheus figures move as a batch runs: queued jobs and queue length, then cost and states."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import service_settings
from tests.integration.conftest import running_worker
from tierflow import Client
from tierflow.worker.metrics import metrics_registry

JOBS = [{"id": f"m-{n}", "kind": "prompt", "payload": {"prompt": f"What is {n} + {n}?"}} for n in range(4)]


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics_registry(client.runtime)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items() if sample == name and wanted <= set(found))


def test_metrics_move_as_a_batch_runs(db: object, pg_url: str, redis_url: str) -> None:
    with Client.from_settings(**service_settings(pg_url, redis_url)) as client:
        before = scrape(client)
        assert total(before, "tierflow_jobs") == 0 and total(before, "tierflow_queue_length") == 0
        batch = client.submit(JOBS)  # no worker yet: the jobs wait in the classify queue
        queued = scrape(client)
        assert total(queued, "tierflow_jobs", kind="prompt", state="queued") == len(JOBS)
        assert total(queued, "tierflow_queue_length", queue="classify") == len(JOBS)
        with running_worker(client.app):
            batch.wait(timeout=120)
        after = scrape(client)
    assert total(after, "tierflow_queue_length", queue="classify") == 0
    ended = sum(total(after, "tierflow_jobs", state=s) for s in ("succeeded", "needs_review", "failed"))
    assert ended == len(JOBS) and total(after, "tierflow_jobs", state="queued") == 0
    assert total(after, "tierflow_attempts_total") >= len(JOBS)
    rows = batch.results()
    cost = sum(row.cost_usd for row in rows)
    assert cost > 0 and total(after, "tierflow_cost_usd_total") == pytest.approx(cost, rel=1e-9)
    assert total(after, "tierflow_tokens_total") == sum(row.tokens for row in rows)
    calls = total(after, "tierflow_model_calls_total", outcome="ok")
    assert calls > 0 and total(after, "tierflow_model_call_latency_seconds_count") == calls
    assert total(after, "tierflow_breaker_state", state="closed") >= 3
