"""The Python client, `tierflow.Client`, in embedded mode and against the real services."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import ROOT, service_settings
from tests.integration.conftest import running_worker
from tierflow import AsyncClient, BatchRejected, Client, JobSpec, TierflowError
from tierflow.store.db import transaction
from tierflow.store.models import Feedback, Job
from tierflow.store.reports import batch_results

JOBS = [
    {"id": "c-1", "kind": "prompt", "payload": {"prompt": "What is 12 * 12?"}},
    {"id": "c-2", "kind": "support", "payload": {"text": "I forgot my password and cannot log in."}},
]


def _embedded(tmp_path: Path) -> Client:
    return Client.from_settings(database_url=f"sqlite:///{tmp_path / 'client.db'}", fake_latency_scale=0.0)


def _job_count(client: Client) -> int:
    with transaction(client.runtime.sessions) as session:
        return int(session.execute(select(func.count()).select_from(Job)).scalar_one())


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From Python\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().split("\n")) <= 12, "the example stays about ten lines"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(TIERFLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'readme.db'}", TIERFLOW_FAKE_LATENCY_SCALE="0")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().split("\n")
    assert [line.split()[0] for line in lines] == ["q1", "t1"]
    assert all(line.split()[1] in {"succeeded", "needs_review"} for line in lines), lines
    assert "144" in lines[0]


def test_embedded_client_runs_jobs_and_a_second_submission_is_the_same_batch(tmp_path: Path) -> None:
    specs = [JobSpec.model_validate(JOBS[0]), JOBS[1]]
    with _embedded(tmp_path) as client:
        batch = client.submit(specs)
        status = batch.wait(timeout=120)
        assert status.total == 2 and batch.accepted == 2
        again = client.submit(JOBS)
        assert (again.batch_id, again.accepted, again.duplicates) == (batch.batch_id, 0, 2)
        assert _job_count(client) == 2
        rows = batch.results()
        with transaction(client.runtime.sessions) as session:
            raw = batch_results(session, batch.batch_id)
        assert [dataclasses.asdict(row) for row in rows] == raw, "the fields of results --format jsonl"
        answer = next(row for row in rows if row.job_id == "c-1")
        assert answer.state == "succeeded" and answer.output is not None and answer.output["answer"] == "144"
        trace = client.explain("c-1")
        assert trace["job_id"] == "c-1" and trace["attempts"]
        client.feedback("c-1", correct=True, note="right")
        with transaction(client.runtime.sessions) as session:
            notes = session.execute(select(Feedback.note).where(Feedback.source == "human")).scalars().all()
        assert notes == ["right"]


def test_invalid_jobs_are_a_typed_error_listing_index_field_and_reason(tmp_path: Path) -> None:
    bad = [
        JOBS[0],
        {"kind": "prompt", "payload": {}},
        {"kind": "song", "payload": {"text": "x"}},
        object(),
    ]
    with _embedded(tmp_path) as client:
        with pytest.raises(BatchRejected) as caught:
            client.submit(bad)  # type: ignore[list-item]
        assert isinstance(caught.value, TierflowError)
        issues = caught.value.issues
        assert [issue["index"] for issue in issues] == [3]  # the object is refused before any parsing
        with pytest.raises(BatchRejected) as caught:
            client.submit(bad[:3])
        issues = caught.value.issues
        assert [(issue["index"], issue["field"]) for issue in issues] == [(1, "payload.prompt"), (2, "kind")]
        assert all(issue["reason"] for issue in issues)
        assert _job_count(client) == 0, "nothing of a refused batch is stored"
        kept = client.submit(bad[:3], skip_invalid=True)
        assert kept.accepted == 1 and [issue["index"] for issue in kept.rejected] == [1, 2]
        kept.wait(timeout=120)


def test_async_client_submits_and_awaits(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        settings = {"database_url": f"sqlite:///{tmp_path / 'async.db'}", "fake_latency_scale": 0.0}
        async with AsyncClient.from_settings(**settings) as client:
            batch = await client.submit(JOBS)
            await batch.wait(timeout=120)
            return [row.state for row in await batch.results()]

    states = asyncio.run(scenario())
    assert len(states) == 2 and set(states) <= {"succeeded", "needs_review"}


@pytest.mark.integration
def test_distributed_client_submits_to_real_workers_once(db: object, pg_url: str, redis_url: str) -> None:
    client = Client.from_settings(**service_settings(pg_url, redis_url))
    try:
        with client, running_worker(client.app):
            batch = client.submit(JOBS)
            batch.wait(timeout=120)
            again = client.submit([JobSpec.model_validate(job) for job in JOBS])
            assert again.batch_id == batch.batch_id and again.duplicates == 2
            states = {row.job_id: row.state for row in batch.results()}
            assert states["c-1"] == "succeeded"
            assert _job_count(client) == 2
            with pytest.raises(TimeoutError):
                client.submit([{"kind": "prompt", "payload": {"prompt": "What is 3 + 4?"}}]).wait(timeout=0)
    finally:
        client.close()
