"""The local provider server through the real openai and anthropic SDKs, and the adapters over it.

Nothing is mocked: the server runs in-process on a free loopback port and every
call goes over HTTP through the official sync clients.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from providers import rules
from providers.anthropic import AnthropicProvider
from providers.base import CompletionRequest, Provider
from providers.openai import OpenAIProvider
from providers.pricing import Price
from providers.server import Fault, FaultRule, Latency, LatencySpec, ProviderServer, default_strength
from providers.tokens import count_tokens, first_tokens
from routing.errors import (
    ConfigError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

pytestmark = pytest.mark.timeout(30)

API_KEY = "sk-tierflow-test-7Qm2Zr9LwX4c"
STRONG_RECORDED = "acme/strong-recorded-v1"
WEAK_RECORDED = "acme/weak-recorded-v1"
REPLAY_PROMPT = "A kettle holds 1.7 litres and a cup takes 0.25 litres. How many full cups can it pour?"
STRONG_RESPONSE = "Six full cups: 6 x 0.25 = 1.5 litres, and 0.2 litres are left over.\n#### 6"
WEAK_RESPONSE = "1.7 / 0.25 = 6.8, so 7 cups.\n#### 7"
UNRECORDED_PROMPT = "Which planet in the made-up Vexa system has the shortest year?"
SYSTEM = "You answer questions.\nTask: answer"
USER = "What is 12 * 7?"

PRICES = {
    "openai:gpt-4o": Price(2.50, 10.00),
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "anthropic:claude-sonnet-4-6": Price(3.00, 15.00),
    "anthropic:claude-haiku-4-5": Price(1.00, 5.00),
}


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


@dataclass
class Adapter:
    provider: OpenAIProvider | AnthropicProvider
    weak: str
    strong: str

    def price(self, model: str) -> Price:
        return PRICES[f"{self.provider.name}:{model}"]

    def prompt_tokens(self, system: str, user: str) -> int:
        return count_tokens(system) + count_tokens(user)


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


def control(server: ProviderServer, path: str, body: object | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.base_url + path, data=data, method="GET" if data is None else "POST"
    )
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text


# -- the protocols through the SDKs ------------------------------------------------------------------


def test_openai_chat_answered_by_rules_has_consistent_usage(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
        max_tokens=200,
        temperature=0.0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}},
        },
    )
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert raw.headers["x-tierflow-answer-source"] == "rules"
    assert text == rules.answer(SYSTEM, USER, default_strength("gpt-4o-mini"))
    assert json.loads(text or "")["answer"] == "84"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == count_tokens(SYSTEM) + count_tokens(USER)
    assert usage.completion_tokens == count_tokens(text or "")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"


def test_openai_developer_role_and_max_completion_tokens_are_understood(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "developer", "content": "Task: draft_reply"},
            {"role": "user", "content": "I want a refund"},
        ],
        max_completion_tokens=3,
    )
    full = rules.answer("Task: draft_reply", "I want a refund", default_strength("gpt-4o"))
    assert "refund request" in full
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == first_tokens(full, 3) == '{"reply":'
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_openai_replay_returns_the_recorded_response_of_the_requested_model(
    openai_client: openai.OpenAI,
) -> None:
    def ask(model: str) -> str | None:
        messages: Any = [{"role": "user", "content": REPLAY_PROMPT}]
        return (
            openai_client.chat.completions.create(model=model, messages=messages).choices[0].message.content
        )

    assert ask("gpt-4o") == STRONG_RESPONSE
    assert ask("gpt-4o-mini") == WEAK_RESPONSE
    assert ask(STRONG_RECORDED) == STRONG_RESPONSE  # recorded names are served as they are


def test_replay_record_without_a_response_is_answered_by_rules(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": UNRECORDED_PROMPT}]
    )
    assert raw.headers["x-tierflow-answer-source"] == "rules"
    assert raw.parse().choices[0].message.content == rules.answer(
        "", UNRECORDED_PROMPT, default_strength("gpt-4o")
    )


def test_anthropic_messages_with_system_blocks_and_usage(anthropic_client: anthropic.Anthropic) -> None:
    raw = anthropic_client.messages.with_raw_response.create(
        model="claude-haiku-4-5",
        max_tokens=300,
        system=[{"type": "text", "text": "Task: draft_reply"}],
        messages=[{"role": "user", "content": "My parcel has not arrived"}],
    )
    message = raw.parse()
    text = message.content[0].text  # type: ignore[union-attr]
    assert text == rules.answer(
        "Task: draft_reply", "My parcel has not arrived", default_strength("claude-haiku-4-5")
    )
    assert message.usage.input_tokens == count_tokens("Task: draft_reply") + count_tokens(
        "My parcel has not arrived"
    )
    assert message.usage.output_tokens == count_tokens(text)
    assert message.stop_reason == "end_turn"
    assert re.fullmatch(r"[0-9a-f]{24}", raw.request_id or "")


def test_anthropic_replay_returns_the_recorded_response(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=400,
        system="be brief",
        messages=[{"role": "user", "content": REPLAY_PROMPT}],
    )
    assert message.content[0].text == STRONG_RESPONSE  # type: ignore[union-attr]


def test_unknown_model_is_not_found_in_each_protocol(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    with pytest.raises(openai.NotFoundError) as from_openai:
        openai_client.chat.completions.create(
            model="gpt-9-imaginary", messages=[{"role": "user", "content": "hi"}]
        )
    assert from_openai.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as from_anthropic:
        anthropic_client.messages.create(
            model="claude-imaginary", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert from_anthropic.value.type == "not_found_error"
    assert from_anthropic.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": from_anthropic.value.api_message},
        "request_id": from_anthropic.value.request_id,
    }


def test_bad_requests_are_refused_in_the_callers_protocol(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    with pytest.raises(openai.BadRequestError) as from_openai:
        openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "system", "content": "no user"}]
        )
    assert from_openai.value.type == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as from_anthropic:
        anthropic_client.messages.create(
            model="claude-haiku-4-5", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    assert from_anthropic.value.type == "invalid_request_error"


def test_models_are_listed_in_both_protocols(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    served = {model.id for model in openai_client.models.list()}
    assert {"gpt-4o", "claude-haiku-4-5", STRONG_RECORDED, WEAK_RECORDED} <= served
    assert {model.id for model in anthropic_client.models.list()} == served
    # embeddings (real vectors, or a 501 without the extra) are tested in test_embeddings.py


def test_a_wrong_api_key_is_refused_and_not_echoed(server: ProviderServer) -> None:
    wrong = "sk-wrong-key-Hh3kP0"
    provider = OpenAIProvider(api_key=wrong, prices=PRICES, base_url=server.openai_base_url)
    with pytest.raises(ProviderRejected) as raised:
        provider.complete("gpt-4o", CompletionRequest(system="", user="hi"))
    assert "HTTP 401" in raised.value.reason
    assert wrong not in str(raised.value) and wrong not in repr(raised.value) and wrong not in repr(provider)
    provider.close()


# -- the adapters ------------------------------------------------------------------------------------


def test_adapter_completion_has_exact_usage_and_cost(adapter: Adapter) -> None:
    request = CompletionRequest(system=SYSTEM, user=USER, max_tokens=200, json_schema={"type": "object"})
    completion = adapter.provider.complete(adapter.weak, request)
    assert completion.text == rules.answer(SYSTEM, USER, default_strength(adapter.weak))
    assert completion.parsed == json.loads(completion.text)
    assert completion.input_tokens == adapter.prompt_tokens(SYSTEM, USER)
    assert completion.output_tokens == count_tokens(completion.text)
    assert completion.cost_usd == adapter.price(adapter.weak).cost(
        completion.input_tokens, completion.output_tokens
    )
    assert completion.cost_usd > 0
    assert (completion.provider, completion.model) == (adapter.provider.name, adapter.weak)
    assert re.fullmatch(r"[0-9a-f]{24}", completion.request_id)
    assert completion.latency_s > 0


def test_adapter_replay_answer_and_cost(adapter: Adapter) -> None:
    completion = adapter.provider.complete(adapter.strong, CompletionRequest(system="", user=REPLAY_PROMPT))
    assert completion.text == STRONG_RESPONSE
    assert completion.parsed is None
    assert completion.cost_usd == adapter.price(adapter.strong).cost(
        count_tokens(REPLAY_PROMPT), count_tokens(STRONG_RESPONSE)
    )


def test_adapter_measures_injected_latency(adapter: Adapter, server: ProviderServer) -> None:
    server.set_latency(LatencySpec(models={adapter.weak: Latency(base_ms=120, jitter_ms=30)}))
    completion = adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER))
    assert completion.latency_s >= 0.12


def test_adapter_rate_limited_carries_retry_after(adapter: Adapter, server: ProviderServer) -> None:
    server.set_faults([FaultRule(fault=Fault.RATE_LIMIT, model=adapter.weak, retry_after_s=2.5)])
    with pytest.raises(ProviderRateLimited) as raised:
        adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER))
    assert raised.value.retry_after == 2.5
    assert (raised.value.provider, raised.value.model) == (adapter.provider.name, adapter.weak)
    assert "HTTP 429" in raised.value.reason
    # the rule names one model: the other is served
    assert adapter.provider.complete(adapter.strong, CompletionRequest(system="", user=USER)).text


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.SERVER_ERROR, ProviderUnavailable),
        (Fault.UNAVAILABLE, ProviderUnavailable),
        (Fault.MALFORMED, ProviderUnavailable),
        (Fault.INVALID_SHAPE, ProviderUnavailable),
        (Fault.DISCONNECT, ProviderUnavailable),
    ],
)
def test_adapter_maps_server_faults_to_provider_errors(
    adapter: Adapter, server: ProviderServer, fault: Fault, error_type: type[ProviderError]
) -> None:
    server.set_faults([FaultRule(fault=fault)])
    with pytest.raises(error_type) as raised:
        adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER))
    assert raised.value.model == adapter.weak
    assert server.stats()["by_outcome"] == {fault.value: 1}
    assert_no_key(str(raised.value), repr(raised.value), repr(adapter.provider))


def test_adapter_5xx_with_retry_after_keeps_it(adapter: Adapter, server: ProviderServer) -> None:
    server.set_faults([FaultRule(fault=Fault.UNAVAILABLE, retry_after_s=0.75)])
    with pytest.raises(ProviderUnavailable) as raised:
        adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER))
    assert raised.value.retry_after == 0.75
    assert "HTTP 503" in raised.value.reason


def test_adapter_times_out_within_the_request_timeout(adapter: Adapter, server: ProviderServer) -> None:
    server.set_faults([FaultRule(fault=Fault.TIMEOUT)])
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as raised:
        adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER, timeout_s=0.3))
    assert time.monotonic() - started < 3.0  # the server holds the request for 5 s
    assert_no_key(str(raised.value), repr(raised.value))


def test_adapter_unknown_model_is_rejected(adapter: Adapter) -> None:
    prices = {**PRICES, f"{adapter.provider.name}:no-such-model": Price(1.0, 1.0)}
    provider = type(adapter.provider)(api_key=API_KEY, prices=prices, base_url=adapter.provider._base_url)
    with pytest.raises(ProviderRejected) as raised:
        provider.complete("no-such-model", CompletionRequest(system="", user=USER))
    assert "HTTP 404" in raised.value.reason
    provider.close()


def test_adapter_refuses_a_model_without_price_before_calling(
    adapter: Adapter, server: ProviderServer
) -> None:
    with pytest.raises(ConfigError):
        adapter.provider.complete("unpriced-model", CompletionRequest(system="", user=USER))
    assert server.stats()["requests"] == 0


def test_adapter_does_not_retry(adapter: Adapter, server: ProviderServer) -> None:
    server.set_faults([FaultRule(fault=Fault.SERVER_ERROR, limit=1)])
    with pytest.raises(ProviderUnavailable):
        adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER))
    assert server.stats()["requests"] == 1
    assert adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER)).text


def test_adapters_satisfy_the_provider_protocol(adapter: Adapter) -> None:
    provider: Provider = adapter.provider
    assert provider.name in {"openai", "anthropic"}
    assert API_KEY not in repr(provider)


# -- runtime control ---------------------------------------------------------------------------------


def test_faults_change_at_runtime_over_http(adapter: Adapter, server: ProviderServer) -> None:
    status, body = control(server, "/_control/faults", {"rules": [{"fault": "server_error", "every": 2}]})
    assert status == 200 and body["ok"] is True
    outcomes = []
    for _ in range(4):
        try:
            adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER))
            outcomes.append("ok")
        except ProviderUnavailable:
            outcomes.append("fault")
    assert outcomes == ["ok", "fault", "ok", "fault"]
    status, stats = control(server, "/_control/stats")
    assert status == 200
    assert stats["requests"] == 4
    assert stats["by_model"] == {adapter.weak: 4}
    assert stats["by_outcome"] == {"rules": 2, "server_error": 2}
    assert stats["faults"][0]["seen"] == 4 and stats["faults"][0]["fired"] == 2
    control(server, "/_control/faults", {"rules": []})
    assert adapter.provider.complete(adapter.weak, CompletionRequest(system="", user=USER)).text


def test_invalid_control_bodies_are_refused(server: ProviderServer) -> None:
    status, body = control(server, "/_control/faults", {"rules": [{"fault": "meteor_strike"}]})
    assert status == 400 and body["error"]["detail"][0]["loc"] == ["rules", 0, "fault"]
    status, _ = control(
        server, "/_control/faults", {"rules": [{"fault": "timeout", "every": 2, "probability": 0.5}]}
    )
    assert status == 400
    status, _ = control(server, "/_control/latency", {"default": {"base_ms": -5}})
    assert status == 400
    assert server.stats()["faults"] == []


def test_seeded_probability_faults_repeat_across_servers(replay_file: Path) -> None:
    def pattern() -> list[bool]:
        rule = FaultRule(fault=Fault.SERVER_ERROR, probability=0.5)
        with ProviderServer(port=0, faults=[rule], seed=123) as fresh:
            client = openai.OpenAI(
                base_url=fresh.openai_base_url, api_key="unused", max_retries=0, timeout=5.0
            )
            seen = []
            for _ in range(12):
                try:
                    client.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": "1 + 1"}]
                    )
                    seen.append(False)
                except openai.InternalServerError:
                    seen.append(True)
            client.close()
        return seen

    first = pattern()
    assert first == pattern()
    assert any(first) and not all(first)
