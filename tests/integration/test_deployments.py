"""Deployments: two tiers served by two endpoints of their own (two local provider servers on
loopback, one OpenAI-compatible, one Anthropic with a key read from a named environment
variable), through the real SDKs and a real worker; and cached input tokens priced at their own
rates, from the usage the SDKs read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.providers.anthropic import AnthropicProvider
from tierflow.providers.base import CompletionRequest
from tierflow.providers.openai import OpenAIProvider
from tierflow.providers.pricing import Price, price_table
from tierflow.providers.server import ProviderServer
from tierflow.providers.tokens import count_tokens
from tierflow.store.db import transaction
from tierflow.store.models import ExpertResult, Result
from tierflow.tasks.submission import submit_file

LARGE_KEY = "sk-ant-deployment-key-4Kq9"
SYSTEM = "You answer arithmetic questions with the number alone.\nTask: answer"
EDGE_PRICE = {"input": 0.20, "cached_input": 0.02, "output": 0.40}


@pytest.fixture()
def edge() -> Iterator[ProviderServer]:
    with ProviderServer(
        port=0, models=["llama-small"], strengths={"llama-small": 0.95}, prompt_cache=True
    ) as s:
        yield s


@pytest.fixture()
def hosted() -> Iterator[ProviderServer]:
    strengths = {"claude-sonnet-4-6": 0.97}
    with ProviderServer(port=0, models=list(strengths), strengths=strengths, api_key=LARGE_KEY) as server:
        yield server


def _deployments(edge: ProviderServer, hosted: ProviderServer) -> dict[str, object]:
    return {
        "edge-small": {
            "provider": "openai",
            "model": "llama-small",
            "base_url": edge.openai_base_url,
            "price": EDGE_PRICE,
            "context_window": 8192,
        },
        "hosted-large": {
            "provider": "anthropic",
            "model": "claude-sonnet-4-6",
            "base_url": hosted.anthropic_base_url,
            "api_key_env": "TF_IT_HOSTED_KEY",
        },
    }


def test_two_deployments_on_two_endpoints_serve_two_tiers(
    make_app, tmp_path, edge, hosted, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TF_IT_HOSTED_KEY", LARGE_KEY)
    app, runtime = make_app(
        tiers={"small": ["edge-small"], "large": ["hosted-large"]}, deployments=_deployments(edge, hosted)
    )
    jobs = [
        {"id": "dep-1", "kind": "prompt", "payload": {"prompt": "What is 2 + 2?"}},
        {"id": "dep-2", "kind": "prompt", "payload": {"prompt": "What is 3 + 3?"}},
        {
            "id": "dep-3",
            "kind": "prompt",
            "payload": {"prompt": "What is 4 + 4?"},
            "metadata": {"tier": "large"},
        },
    ]
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id)
    with transaction(runtime.sessions) as session:
        calls = session.execute(select(ExpertResult).where(ExpertResult.model.is_not(None))).scalars().all()
        results = {r.job_id: r for r in session.execute(select(Result)).scalars()}
    assert {job: (r.tier, r.output["answer"]) for job, r in results.items()} == {
        "dep-1": ("small", "4"),
        "dep-2": ("small", "6"),
        "dep-3": ("large", "8"),
    }
    served = {(c.job_id, c.provider, c.model) for c in calls}
    assert served == {
        ("dep-1", "edge-small", "llama-small"),
        ("dep-2", "edge-small", "llama-small"),
        ("dep-3", "hosted-large", "claude-sonnet-4-6"),
    }
    assert edge.stats()["by_model"] == {"llama-small": 2}
    assert hosted.stats()["by_model"] == {"claude-sonnet-4-6": 1}  # its key came from the variable
    prices = price_table(runtime.settings.price_overrides())
    large = next(c for c in calls if c.provider == "hosted-large")
    assert large.cost_usd == pytest.approx(
        prices["hosted-large:claude-sonnet-4-6"].cost(large.input_tokens, large.output_tokens)
    )
    # the second call with the same expert prompt read it from the edge server's cache: cheaper
    small = [c for c in calls if c.provider == "edge-small"]
    uncached = sum(Price(0.20, 0.40).cost(c.input_tokens, c.output_tokens) for c in small)
    assert 0 < sum(c.cost_usd for c in small) < uncached


def test_cached_input_tokens_are_priced_at_their_own_rates_through_both_sdks() -> None:
    request = CompletionRequest(system=SYSTEM, user="What is 6 * 7?", max_tokens=50)
    prices = price_table({})
    system_tokens = count_tokens(SYSTEM)
    with ProviderServer(port=0, models=["gpt-4o", "claude-sonnet-4-5"], prompt_cache=True) as server:
        openai_provider = OpenAIProvider(api_key="sk-x", prices=prices, base_url=server.openai_base_url)
        first, second = (openai_provider.complete("gpt-4o", request) for _ in range(2))
        anthropic_provider = AnthropicProvider(
            api_key="sk-x", prices=prices, base_url=server.anthropic_base_url
        )
        written, read = (anthropic_provider.complete("claude-sonnet-4-5", request) for _ in range(2))
    gpt, sonnet = prices["openai:gpt-4o"], prices["anthropic:claude-sonnet-4-5"]
    assert (first.cached_input_tokens, second.cached_input_tokens) == (0, system_tokens)
    assert first.input_tokens == second.input_tokens > system_tokens
    assert first.cost_usd == pytest.approx(gpt.cost(first.input_tokens, first.output_tokens))
    saved = system_tokens * (2.50 - 1.25) / 1e6  # gpt-4o: 2.50 input, 1.25 cached input
    assert second.cost_usd == pytest.approx(first.cost_usd - saved)
    assert (written.cache_write_tokens, written.cached_input_tokens) == (system_tokens, 0)
    assert (read.cache_write_tokens, read.cached_input_tokens) == (0, system_tokens)
    assert written.input_tokens == read.input_tokens  # every input token, the cached ones among them
    plain = written.input_tokens - system_tokens
    assert written.cost_usd == pytest.approx(
        (plain * 3.00 + system_tokens * 3.75 + written.output_tokens * 15.00) / 1e6
    )
    assert read.cost_usd == pytest.approx(
        (plain * 3.00 + system_tokens * 0.30 + read.output_tokens * 15.00) / 1e6
    )
    assert read.cost_usd == pytest.approx(
        sonnet.cost(read.input_tokens, read.output_tokens, cached_tokens=system_tokens)
    )
