"""`model: "tierflow/<tier>"` pins a job to a tier, through the official `openai` SDK against
`tierflow serve` and a real worker: the pinned tier answers, and a pinned job whose checks fail
is held for review (HTTP 422) instead of escalating, where `tierflow/auto` escalates it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlalchemy import Engine, select

from tests.e2e.api_support import MODELS, create_key, fresh_stack, start_service, write_lines
from tests.e2e.conftest import Processes
from tests.e2e.test_api_batches import read_lines, wait_ended
from tierflow.providers.server import ProviderServer
from tierflow.store.models import Attempt, Job
from tierflow.worker.app import TierflowCelery

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
# The small model is too weak to pass the prompt kind's checks; the others pass them.
STRENGTHS = {"gpt-4o-mini": 0.05, "claude-sonnet-4-6": 0.8, "gpt-4o": 0.97}
QUESTION = [{"role": "user", "content": "What is 12 * 12?"}]


@pytest.fixture()
def weak_small() -> Iterator[ProviderServer]:
    with ProviderServer(port=0, models=MODELS, strengths=STRENGTHS) as server:
        yield server


def _attempt_tiers(store: Engine, job_id: str) -> tuple[str, dict[str, object], list[str]]:
    with store.connect() as connection:
        state, meta = connection.execute(select(Job.state, Job.meta).where(Job.id == job_id)).one()
        tiers = connection.execute(
            select(Attempt.tier).where(Attempt.job_id == job_id).order_by(Attempt.number)
        ).scalars()
        return state, meta, list(tiers)


def test_a_pinned_tier_answers_and_a_pinned_job_that_fails_its_checks_is_held(
    processes: Processes,
    control_app: TierflowCelery,
    weak_small: ProviderServer,
    store_engine: Engine,
    tmp_path: Path,
) -> None:
    fresh_stack(processes, weak_small, store_engine, tmp_path)
    client = openai.OpenAI(
        base_url=start_service(processes, control_app), api_key=create_key(processes, "acme")
    )

    large = client.chat.completions.create(model="tierflow/large", messages=QUESTION)
    assert large.model == "tierflow/large:gpt-4o" and large.choices[0].message.content == "144"
    medium = client.chat.completions.create(model="medium", messages=QUESTION)
    assert medium.model == "tierflow/medium:claude-sonnet-4-6"

    routed = client.chat.completions.create(model="tierflow/auto", messages=QUESTION)
    assert routed.model.startswith(("tierflow/medium:", "tierflow/large:"))  # escalated past small
    with pytest.raises(openai.UnprocessableEntityError) as held:
        client.chat.completions.create(model="tierflow/small", messages=QUESTION)
    error = held.value.body
    assert isinstance(error, dict) and error["code"] == "needs_review"
    state, meta, tiers = _attempt_tiers(store_engine, error["job_id"])
    assert state == "needs_review" and meta["tier"] == "small" and tiers == ["small"]

    with pytest.raises(openai.BadRequestError, match="tierflow/huge") as refused:
        client.chat.completions.create(model="tierflow/huge", messages=QUESTION)
    assert refused.value.param == "body.model"

    lines = [
        {
            "custom_id": f"{tier}-{n}",
            "url": "/v1/chat/completions",
            "body": {
                "model": f"tierflow/{tier}",
                "messages": [{"role": "user", "content": f"What is {n} + {n}?"}],
            },
        }
        for tier in ("small", "large")
        for n in (2, 3)
    ]
    upload = client.files.create(
        file=write_lines(tmp_path / "pinned.jsonl", lines).open("rb"), purpose="batch"
    )
    created = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch, seen = wait_ended(client, created.id)
    assert batch.status == "completed", (batch, seen)
    output, errors = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert {line["custom_id"] for line in output} == {"large-2", "large-3"}
    assert {line["response"]["body"]["model"] for line in output} == {"tierflow/large:gpt-4o"}
    assert {(line["custom_id"], line["error"]["code"]) for line in errors} == {
        ("small-2", "needs_review"),
        ("small-3", "needs_review"),
    }
