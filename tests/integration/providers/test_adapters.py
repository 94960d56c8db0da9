"""The OpenAI and Anthropic adapters over the local provider server: usage, cost, errors, timeouts.

Nothing is mocked: the server runs in-process on a free loopback port and every
call goes over HTTP through the official sync clients.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.providers.support import (
    API_KEY,
    PRICES,
    REPLAY_PROMPT,
    STRONG_RESPONSE,
    SYSTEM,
    USER,
    Adapter,
    assert_no_key,
)
from tierflow.providers import rules
from tierflow.providers.base import CompletionRequest, Provider
from tierflow.providers.pricing import Price
from tierflow.providers.server import Fault, FaultRule, Latency, LatencySpec, ProviderServer, default_strength
from tierflow.providers.tokens import count_tokens
from tierflow.routing.errors import (
    ConfigError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

pytestmark = pytest.mark.timeout(30)

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
