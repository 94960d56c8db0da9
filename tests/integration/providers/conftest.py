"""The local provider server in-process on a free loopback port, and SDK clients and adapters over it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.integration.providers.support import (
    API_KEY,
    PRICES,
    REPLAY_PROMPT,
    STRONG_RECORDED,
    STRONG_RESPONSE,
    UNRECORDED_PROMPT,
    WEAK_RECORDED,
    WEAK_RESPONSE,
    Adapter,
)
from tierflow.providers.anthropic import AnthropicProvider
from tierflow.providers.openai import OpenAIProvider
from tierflow.providers.server import LatencySpec, ProviderServer


@pytest.fixture(scope="module")
def replay_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = [
        {
            "id": "made-up-1",
            "prompt": REPLAY_PROMPT,
            "outcomes": {
                WEAK_RECORDED: {"correct": False, "response": WEAK_RESPONSE},
                STRONG_RECORDED: {"correct": True, "response": STRONG_RESPONSE},
            },
        },
        {  # correctness only, as MMLU records are: answered from the rules
            "id": "made-up-2",
            "prompt": UNRECORDED_PROMPT,
            "outcomes": {WEAK_RECORDED: {"correct": True}, STRONG_RECORDED: {"correct": True}},
        },
    ]
    path = tmp_path_factory.mktemp("replay") / "made_up.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(replay_file: Path) -> Iterator[ProviderServer]:
    with ProviderServer(
        port=0,
        replay_paths=[replay_file],
        models=["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-6", "claude-haiku-4-5"],
        replay_models={
            "gpt-4o": STRONG_RECORDED,
            "claude-sonnet-4-6": STRONG_RECORDED,
            "gpt-4o-mini": WEAK_RECORDED,
            "claude-haiku-4-5": WEAK_RECORDED,
        },
        api_key=API_KEY,
        hang_s=5.0,
        seed=7,
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_server(server: ProviderServer) -> None:
    server.clear_faults()
    server.set_latency(LatencySpec())
    server.reset_stats()


@pytest.fixture
def openai_client(server: ProviderServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key=API_KEY, max_retries=0, timeout=5.0)
    yield client
    client.close()


@pytest.fixture
def anthropic_client(server: ProviderServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        base_url=server.anthropic_base_url, api_key=API_KEY, max_retries=0, timeout=5.0
    )
    yield client
    client.close()


@pytest.fixture(params=["openai", "anthropic"])
def adapter(request: pytest.FixtureRequest, server: ProviderServer) -> Iterator[Adapter]:
    provider: OpenAIProvider | AnthropicProvider
    if request.param == "openai":
        provider = OpenAIProvider(api_key=API_KEY, prices=PRICES, base_url=server.openai_base_url)
        made = Adapter(provider, weak="gpt-4o-mini", strong="gpt-4o")
    else:
        provider = AnthropicProvider(api_key=API_KEY, prices=PRICES, base_url=server.anthropic_base_url)
        made = Adapter(provider, weak="claude-haiku-4-5", strong="claude-sonnet-4-6")
    yield made
    provider.close()
