"""A worker in a five-minute model call keeps its job: the lease is renewed, nothing runs twice.

Worker processes at the default settings (a 30 s lease, reconcile every 10 s), but
for a call timeout long enough for the call (a user with slow models sets it). The
small tier's model answers after five minutes; the job's lease lapses ten times
over if nothing renews it, so a reconciler that went by the job's own progress
would send it again and the model would be called twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from tests.conftest import PG_ADMIN_URL
from tests.e2e.conftest import WORKERS, Processes, wait_for_workers
from tierflow.providers.server import LatencySpec, ProviderServer
from tierflow.store.db import make_engine
from tierflow.store.models import ExpertResult, Job, Result
from tierflow.worker.app import TierflowCelery

# mostly waiting (on a slow model, on the reconciler's cycles): `make test` runs it beside the rest
pytestmark = [pytest.mark.e2e, pytest.mark.waits]

CALL_S = 300.0
TIERS = {
    "small": ["openai:gpt-4o-mini"],
    "medium": ["anthropic:claude-sonnet-4-6"],
    "large": ["openai:gpt-4o"],
}


@pytest.fixture()
def slow_small_model() -> Iterator[ProviderServer]:
    latency = LatencySpec.model_validate({"models": {"gpt-4o-mini": {"base_ms": CALL_S * 1000}}})
    models = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-6"]
    with ProviderServer(port=0, models=models, latency=latency) as server:
        yield server


@pytest.fixture()
def own_database() -> Iterator[str]:
    """A database of this test's own: the session's holds a policy seeded with other tiers."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tierflow_long_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.timeout(1200)
def test_a_job_in_a_five_minute_model_call_is_never_sent_again(
    processes: Processes,
    control_app: TierflowCelery,
    own_database: str,
    slow_small_model: ProviderServer,
    tmp_path: Path,
) -> None:
    store_engine = make_engine(own_database)
    processes.env.update(
        TIERFLOW_DATABASE_URL=own_database,
        TIERFLOW_TIERS=json.dumps(TIERS),
        TIERFLOW_OPENAI_BASE_URL=slow_small_model.openai_base_url,
        TIERFLOW_ANTHROPIC_BASE_URL=slow_small_model.anthropic_base_url,
        TIERFLOW_CALL_TIMEOUT_S=str(CALL_S + 120),
    )
    processes.run("db", "upgrade")
    for name, (args, _) in WORKERS.items():
        processes.start(name, *args)
    processes.start("beat", "beat", "--schedule", str(tmp_path / "beat-schedule"))
    wait_for_workers(control_app, processes, {node for _, node in WORKERS.values()})

    job_id = f"long-call-{tmp_path.name[-6:]}"
    path = tmp_path / "long.jsonl"
    path.write_text(
        json.dumps({"id": job_id, "kind": "prompt", "payload": {"prompt": "What is 17 * 23?"}}) + "\n"
    )
    processes.run("submit", str(path), "--json")
    started = time.monotonic()
    deadline = started + 3 * CALL_S
    while time.monotonic() < deadline:
        processes.check_alive()
        with store_engine.connect() as connection:
            state, redeliveries = connection.execute(
                select(Job.state, Job.redeliveries).where(Job.id == job_id)
            ).one()
        assert redeliveries == 0, "the job was sent again while its worker was in the call"
        if state in ("succeeded", "needs_review", "failed"):
            break
        time.sleep(1.0)
    else:
        pytest.fail(f"{job_id} not terminal after {3 * CALL_S:.0f}s")
    elapsed = time.monotonic() - started
    with store_engine.connect() as connection:
        results = connection.execute(select(Result.id).where(Result.job_id == job_id)).all()
        rows = connection.execute(select(ExpertResult.calls).where(ExpertResult.job_id == job_id)).scalars()
        recorded = [call for calls in rows for call in (calls or [])]
    served = slow_small_model.stats()["by_model"]
    long_calls = [c for c in recorded if c["model"].endswith("gpt-4o-mini") and c["latency_s"] >= CALL_S - 5]
    assert long_calls, f"no five-minute call was made: {recorded}"
    assert sum(served.values()) == len(recorded), (
        f"the server answered {served}, the store recorded {recorded}"
    )
    assert len(results) == 1
    print(
        f"\n[e2e figures] long call: {len(long_calls)} call(s) of {CALL_S:.0f}s, job done in {elapsed:.0f}s"
    )
