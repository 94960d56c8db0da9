"""The pipeline calling models through the real openai and anthropic SDKs over HTTP.

The tiers map to OpenAI and Anthropic model names served by the project's local
provider server on loopback; nothing is mocked.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.providers.pricing import price_table
from tierflow.providers.server import Fault, FaultRule, ProviderServer
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, ExpertResult, Result
from tierflow.tasks.submission import submit_file

TIERS = {
    "small": ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
    "medium": ["anthropic:claude-sonnet-4-6"],
    "large": ["openai:gpt-4o"],
}
JOBS = [
    {"id": "sdk-1", "kind": "support", "payload": {"text": "I forgot my password and cannot log in."}},
    {
        "id": "sdk-2",
        "kind": "document",
        "payload": {"text": "ACME CO\nInvoice No: INV-9\nDate: 2026-02-03\nSubtotal 10.00\nTotal 10.80"},
    },
    {"id": "sdk-3", "kind": "prompt", "payload": {"prompt": "What is 12 * 12?"}},
]


@pytest.fixture()
def provider_server():  # type: ignore[no-untyped-def]
    models = ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "claude-sonnet-4-6"]
    with ProviderServer(
        port=0,
        models=models,
        strengths={"gpt-4o-mini": 0.55, "claude-haiku-4-5": 0.55, "claude-sonnet-4-6": 0.8, "gpt-4o": 0.97},
    ) as server:
        yield server


def _settings(server: ProviderServer) -> dict[str, object]:
    return {
        "tiers": TIERS,
        "openai_base_url": server.openai_base_url,
        "anthropic_base_url": server.anthropic_base_url,
        "openai_api_key": "sk-test-not-a-secret",
        "anthropic_api_key": "sk-ant-test-not-a-secret",
        "prices": {"anthropic:claude-sonnet-4-6": (3.0, 15.0)},
    }


def test_jobs_are_answered_through_the_sdks_with_costs_from_usage(make_app, tmp_path, provider_server):
    app, runtime = make_app(**_settings(provider_server))
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", JOBS))
        wait_terminal(runtime, report.batch_id)
    with transaction(runtime.sessions) as session:
        calls = session.execute(select(ExpertResult).where(ExpertResult.model.is_not(None))).scalars().all()
        results = session.execute(select(Result)).scalars().all()
    assert len(results) == len(JOBS)
    assert {(c.provider, c.model) for c in calls} >= {("openai", "gpt-4o-mini")}
    prices = price_table({"anthropic:claude-sonnet-4-6": (3.0, 15.0)})
    for call in calls:
        price = prices[f"{call.provider}:{call.model}"]
        assert call.input_tokens > 0 and call.output_tokens > 0
        assert call.cost_usd == pytest.approx(price.cost(call.input_tokens, call.output_tokens))
    answered = {r.job_id: r.output for r in results}
    assert answered["sdk-3"]["answer"] == "144"
    served = provider_server.stats()["by_model"]
    assert sum(served.values()) == len(calls), "one HTTP request per recorded model call"


def test_a_failing_first_model_falls_back_to_the_next_model_of_the_tier(make_app, tmp_path, provider_server):
    provider_server.set_faults([FaultRule(fault=Fault.SERVER_ERROR, model="gpt-4o-mini")])
    app, runtime = make_app(**_settings(provider_server))
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", JOBS[:1]))
        wait_terminal(runtime, report.batch_id)
    with transaction(runtime.sessions) as session:
        drafter = session.execute(
            select(ExpertResult).where(ExpertResult.expert == "drafter", ExpertResult.attempt == 1)
        ).scalar_one()
        attempt = session.execute(select(Attempt).where(Attempt.number == 1)).scalar_one()
    assert (drafter.provider, drafter.model, drafter.error) == ("anthropic", "claude-haiku-4-5", None)
    assert attempt.tier == "small" and attempt.verdict == "accept"


def _replay(path, answers: dict[str, str], model: str = "gpt-4o-mini"):  # type: ignore[no-untyped-def]
    import json

    lines = [
        json.dumps(
            {"id": f"r{i}", "prompt": prompt, "outcomes": {model: {"correct": False, "response": text}}}
        )
        for i, (prompt, text) in enumerate(answers.items())
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


PROMPT_JOB = {"id": "st-1", "kind": "prompt", "payload": {"prompt": "What is 12 * 12?"}}
NOT_JSON = "It is one hundred and forty-four."


def _structured_server(replay):  # type: ignore[no-untyped-def]
    return ProviderServer(
        port=0,
        replay_paths=[replay],
        models=["gpt-4o-mini", "gpt-4o"],
        strengths={"gpt-4o-mini": 0.9, "gpt-4o": 0.97},
        replay_verbatim=True,  # the recorded text is the invalid output under test
    )


def test_output_that_does_not_validate_is_retried_once_with_the_error(make_app, tmp_path):
    replay = _replay(tmp_path / "replay.jsonl", {"What is 12 * 12?": NOT_JSON})
    with _structured_server(replay) as server:
        app, runtime = make_app(
            tiers={"small": ["openai:gpt-4o-mini"], "medium": ["openai:gpt-4o"], "large": ["openai:gpt-4o"]},
            openai_base_url=server.openai_base_url,
            openai_api_key="sk-test",
        )
        with running_worker(app):
            report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", [PROMPT_JOB]))
            wait_terminal(runtime, report.batch_id)
    with transaction(runtime.sessions) as session:
        answerer = session.execute(select(ExpertResult)).scalar_one()
        result = session.execute(select(Result)).scalar_one()
    assert [c["outcome"] for c in answerer.calls] == ["ok", "ok"], "first answer invalid, retry valid"
    assert answerer.cost_usd == pytest.approx(sum(c["cost_usd"] for c in answerer.calls))
    assert (result.tier, result.output) == ("small", {"answer": "144"})


def test_output_invalid_twice_is_rejected_and_the_job_escalates(make_app, tmp_path):
    from tierflow.providers.structured import retry_prompt
    from tierflow.routing.experts import UnparseableOutput, parse_answer
    from tierflow.routing.kinds.builtin import Answer

    with pytest.raises(UnparseableOutput) as problem:
        parse_answer(Answer, NOT_JSON)
    retry = retry_prompt("What is 12 * 12?", str(problem.value))
    replay = _replay(tmp_path / "replay.jsonl", {"What is 12 * 12?": NOT_JSON, retry: NOT_JSON})
    with _structured_server(replay) as server:
        app, runtime = make_app(
            tiers={"small": ["openai:gpt-4o-mini"], "medium": ["openai:gpt-4o"], "large": ["openai:gpt-4o"]},
            openai_base_url=server.openai_base_url,
            openai_api_key="sk-test",
        )
        with running_worker(app):
            report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", [PROMPT_JOB]))
            wait_terminal(runtime, report.batch_id)
    with transaction(runtime.sessions) as session:
        first = session.execute(select(ExpertResult).where(ExpertResult.attempt == 1)).scalar_one()
        result = session.execute(select(Result)).scalar_one()
    assert first.output is None and "did not validate after one retry" in first.error
    assert len(first.calls) == 2 and first.cost_usd > 0, "the rejected calls are still paid for"
    assert (result.tier, result.output) == ("medium", {"answer": "144"})
