"""A tier's models behind breakers, rate limits and retries, over HTTP through the real SDKs.

The local provider server runs in-process on a loopback port with injected
faults; the adapters call it through the official openai and anthropic clients;
breakers and limits live in the real Redis. Sleeps are recorded, not slept.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from tierflow.providers.anthropic import AnthropicProvider
from tierflow.providers.base import CompletionRequest, Provider
from tierflow.providers.openai import OpenAIProvider
from tierflow.providers.pricing import price_table
from tierflow.providers.resilience.breaker import Breakers, BreakerState
from tierflow.providers.resilience.config import BreakerConfig, RateLimit
from tierflow.providers.resilience.ratelimit import RateLimits
from tierflow.providers.resilience.records import CallOutcome, CallRecord
from tierflow.providers.resilience.tier import TierCaller
from tierflow.providers.retry import RetryPolicy
from tierflow.providers.server import Fault, FaultRule, ProviderServer
from tierflow.routing.errors import ProviderRateLimited, ProviderRejected, TierUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-tierflow-resilience-9Vq3Lx7Pz2"
FLAKY, FALLBACK = "openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"
SMALL = [FLAKY, FALLBACK]
PRICES = price_table({"openai:no-such-model": (1.0, 1.0)})
REQUEST = CompletionRequest(
    system="You answer questions.\nTask: answer", user="What is 12 * 7?", timeout_s=5.0
)
NO_WAIT = RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0)

# Another worker process: its own Redis client, breakers, adapters and TierCaller; one tier call.
OTHER_WORKER = """
import json, os, sys
import redis
from tierflow.providers.anthropic import AnthropicProvider
from tierflow.providers.base import CompletionRequest
from tierflow.providers.openai import OpenAIProvider
from tierflow.providers.pricing import price_table
from tierflow.providers.resilience.breaker import Breakers
from tierflow.providers.resilience.config import BreakerConfig
from tierflow.providers.resilience.ratelimit import RateLimits
from tierflow.providers.resilience.tier import TierCaller
from tierflow.providers.retry import RetryPolicy
url, config, base_url, models = sys.argv[1:5]
key, prices, client = os.environ["TIERFLOW_TEST_KEY"], price_table({}), redis.Redis.from_url(url)
breakers = Breakers(client, BreakerConfig.model_validate_json(config))
providers = {
    "openai": OpenAIProvider(api_key=key, prices=prices, base_url=base_url + "/v1"),
    "anthropic": AnthropicProvider(api_key=key, prices=prices, base_url=base_url),
}
retry = RetryPolicy(max_attempts=2, base_delay_s=0, max_delay_s=0)
caller = TierCaller(providers, breakers, RateLimits(client), retry)
calls = []
request = CompletionRequest(system="Task: answer", user="What is 2 + 2?", timeout_s=5.0)
completion = caller.complete(models.split(","), request, tier="small", on_call=calls.append)
state = breakers.state(models.split(",")[0]).value
print(json.dumps({"state": state, "answered_by": completion.model, "calls": [c.as_dict() for c in calls]}))
"""


class SleepRecorder(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    models = ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5"]
    with ProviderServer(port=0, models=models, api_key=API_KEY, hang_s=5.0, seed=11) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_server(server: ProviderServer) -> None:
    server.clear_faults()
    server.reset_stats()


@pytest.fixture(scope="module")
def providers(server: ProviderServer) -> Iterator[dict[str, Provider]]:
    openai = OpenAIProvider(api_key=API_KEY, prices=PRICES, base_url=server.openai_base_url)
    anthropic = AnthropicProvider(api_key=API_KEY, prices=PRICES, base_url=server.anthropic_base_url)
    yield {"openai": openai, "anthropic": anthropic}
    openai.close()
    anthropic.close()


def breaker_config(prefix: str, **fields: Any) -> BreakerConfig:
    defaults: dict[str, Any] = {"window_s": 30.0, "min_calls": 10, "error_rate": 0.5, "cooldown_s": 30.0}
    return BreakerConfig(
        **{**defaults, "probe_timeout_s": 30.0, "key_ttl_s": 120.0, "key_prefix": prefix, **fields}
    )


def calls_of(records: list[CallRecord]) -> list[tuple[str, int, CallOutcome]]:
    return [(record.model, record.attempt, record.outcome) for record in records]


def test_a_model_failing_60_percent_opens_its_breaker_and_every_worker_falls_back(
    server: ProviderServer, providers: dict[str, Provider], client: redis.Redis, prefix: str, redis_url: str
) -> None:
    server.set_faults([FaultRule(fault=Fault.SERVER_ERROR, model="gpt-4o-mini", probability=0.6)])
    config = breaker_config(prefix)
    breakers = Breakers(client, config)
    caller = TierCaller(providers, breakers, RateLimits(client), NO_WAIT, sleep=SleepRecorder())
    records: list[CallRecord] = []
    answered_by = []
    for _ in range(40):
        answered_by.append(caller.complete(SMALL, REQUEST, tier="small", on_call=records.append).model)
        if breakers.state(FLAKY) is BreakerState.OPEN:
            break
    assert breakers.state(FLAKY) is BreakerState.OPEN
    flaky = [record for record in records if record.model == FLAKY]
    failed = [record for record in flaky if record.outcome is CallOutcome.UNAVAILABLE]
    assert len(flaky) >= config.min_calls and len(failed) >= config.error_rate * len(flaky)
    assert {"gpt-4o-mini", "claude-haiku-4-5"} <= set(answered_by)  # failures fell back while closed

    server.reset_stats()
    opened_at = len(records)
    assert caller.complete(SMALL, REQUEST, tier="small", on_call=records.append).model == "claude-haiku-4-5"
    assert calls_of(records[opened_at:]) == [(FALLBACK, 1, CallOutcome.OK)]

    other = subprocess.run(
        [
            sys.executable,
            "-c",
            OTHER_WORKER,
            redis_url,
            config.model_dump_json(),
            server.base_url,
            ",".join(SMALL),
        ],
        capture_output=True,
        text=True,
        timeout=25,
        cwd=ROOT,
        env={**os.environ, "TIERFLOW_TEST_KEY": API_KEY},
    )
    assert other.returncode == 0, other.stderr
    seen = json.loads(other.stdout.strip().splitlines()[-1])
    assert (seen["state"], seen["answered_by"]) == ("open", "claude-haiku-4-5")
    assert [(call["model"], call["outcome"]) for call in seen["calls"]] == [(FALLBACK, "ok")]
    assert server.stats()["by_model"] == {"claude-haiku-4-5": 2}  # the flaky model was not asked again


def test_retries_on_429_wait_at_least_the_retry_after(
    server: ProviderServer, providers: dict[str, Provider], client: redis.Redis, prefix: str
) -> None:
    server.set_faults([FaultRule(fault=Fault.RATE_LIMIT, model="gpt-4o-mini", retry_after_s=1.5, limit=2)])
    sleeps = SleepRecorder()
    breakers = Breakers(client, breaker_config(prefix))
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.05, max_delay_s=0.1, max_retry_after_s=5.0)
    caller = TierCaller(providers, breakers, RateLimits(client), retry, sleep=sleeps)
    records: list[CallRecord] = []
    completion = caller.complete(SMALL, REQUEST, tier="small", on_call=records.append)
    assert completion.model == "gpt-4o-mini" and completion.cost_usd > 0
    assert len(sleeps) == 2 and all(wait >= 1.5 for wait in sleeps)
    assert [(r.attempt, r.outcome, r.retry_after) for r in records] == [
        (1, CallOutcome.RATE_LIMITED, 1.5),
        (2, CallOutcome.RATE_LIMITED, 1.5),
        (3, CallOutcome.OK, None),
    ]
    assert records[2].cost_usd == completion.cost_usd and records[2].input_tokens == completion.input_tokens
    status = breakers.status(FLAKY)  # a 429 says nothing against the model
    assert (status.state, status.calls, status.failures) == (BreakerState.CLOSED, 1, 0)


def test_every_model_out_is_a_tier_unavailable_naming_each_cause(
    server: ProviderServer, providers: dict[str, Provider], client: redis.Redis, prefix: str
) -> None:
    breakers = Breakers(client, breaker_config(prefix, min_calls=3))
    for _ in range(3):
        breakers.record("openai:gpt-4o", False)
    server.set_faults(
        [
            FaultRule(fault=Fault.SERVER_ERROR, model="gpt-4o-mini"),
            FaultRule(fault=Fault.TIMEOUT, model="claude-haiku-4-5"),
        ]
    )
    caller = TierCaller(providers, breakers, RateLimits(client), NO_WAIT, sleep=SleepRecorder())
    records: list[CallRecord] = []
    with pytest.raises(TierUnavailable) as out:
        caller.complete(
            ["openai:gpt-4o", *SMALL], replace(REQUEST, timeout_s=0.3), tier="small", on_call=records.append
        )
    error = out.value
    assert (error.provider, error.model) == ("tier", "small")
    assert "openai:gpt-4o: breaker open" in error.reason
    assert "openai:gpt-4o-mini: unavailable: HTTP 500" in error.reason
    assert "anthropic:claude-haiku-4-5: timeout: request timed out" in error.reason
    assert calls_of(records) == [
        (FLAKY, 1, CallOutcome.UNAVAILABLE),
        (FLAKY, 2, CallOutcome.UNAVAILABLE),
        (FALLBACK, 1, CallOutcome.TIMEOUT),
        (FALLBACK, 2, CallOutcome.TIMEOUT),
    ]
    assert pickle.loads(pickle.dumps(error)).reason == error.reason  # it crosses Celery intact
    assert breakers.status(FLAKY).failures == 2 and breakers.status(FALLBACK).failures == 2


def test_a_tier_out_only_for_rate_limits_asks_to_retry_after_the_smallest_wait(
    server: ProviderServer, providers: dict[str, Provider], client: redis.Redis, prefix: str
) -> None:
    limits = RateLimits(client, {FLAKY: RateLimit(requests_per_minute=2)}, key_prefix=prefix)
    limits.acquire(FLAKY)
    limits.acquire(FLAKY)  # the cluster has used the minute's two calls
    server.set_faults([FaultRule(fault=Fault.RATE_LIMIT, model="claude-haiku-4-5", retry_after_s=7.0)])
    sleeps = SleepRecorder()
    retry = RetryPolicy(max_attempts=3, max_retry_after_s=5.0)  # 7 s is too long to wait in a worker
    caller = TierCaller(providers, Breakers(client, breaker_config(prefix)), limits, retry, sleep=sleeps)
    records: list[CallRecord] = []
    with pytest.raises(ProviderRateLimited) as limited:
        caller.complete(SMALL, REQUEST, tier="small", on_call=records.append)
    assert (limited.value.provider, limited.value.model, limited.value.retry_after) == ("tier", "small", 7.0)
    assert "openai:gpt-4o-mini: cluster rate limit: requests per minute used up" in limited.value.reason
    assert sleeps == []
    assert calls_of(records) == [(FALLBACK, 1, CallOutcome.RATE_LIMITED)]
    assert server.stats()["by_model"] == {"claude-haiku-4-5": 1}

    server.clear_faults()
    both = RateLimits(
        client,
        {FLAKY: RateLimit(requests_per_minute=2), FALLBACK: RateLimit(requests_per_minute=1)},
        key_prefix=prefix,
    )
    both.acquire(FALLBACK)
    caller = TierCaller(providers, Breakers(client, breaker_config(prefix)), both, retry, sleep=sleeps)
    with pytest.raises(ProviderRateLimited) as both_limited:
        caller.complete(SMALL, REQUEST, tier="small")
    assert 25.0 < (both_limited.value.retry_after or 0) <= 30.0  # the flaky model's room comes first


def test_a_rejected_request_is_neither_retried_nor_sent_to_the_fallback(
    server: ProviderServer, providers: dict[str, Provider], client: redis.Redis, prefix: str
) -> None:
    breakers = Breakers(client, breaker_config(prefix))
    caller = TierCaller(providers, breakers, RateLimits(client), NO_WAIT, sleep=SleepRecorder())
    records: list[CallRecord] = []
    with pytest.raises(ProviderRejected) as rejected:
        caller.complete(["openai:no-such-model", FALLBACK], REQUEST, tier="small", on_call=records.append)
    assert "HTTP 404" in rejected.value.reason
    assert calls_of(records) == [("openai:no-such-model", 1, CallOutcome.REJECTED)]
    assert server.stats()["requests"] == 1
    assert breakers.status("openai:no-such-model").calls == 0  # the model is not blamed for it


def test_api_keys_never_reach_logs_records_or_errors(
    server: ProviderServer,
    providers: dict[str, Provider],
    client: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-wrong-resilience-Tt5Kd8"
    server.set_faults(
        [
            FaultRule(fault=Fault.SERVER_ERROR, model="gpt-4o-mini"),
            FaultRule(fault=Fault.RATE_LIMIT, model="claude-haiku-4-5", retry_after_s=0.5, limit=1),
        ]
    )
    breakers = Breakers(client, breaker_config(prefix, min_calls=2))
    caller = TierCaller(providers, breakers, RateLimits(client), NO_WAIT, sleep=SleepRecorder())
    records: list[CallRecord] = []
    assert caller.complete(SMALL, REQUEST, tier="small", on_call=records.append).model == "claude-haiku-4-5"
    assert breakers.state(FLAKY) is BreakerState.OPEN  # its warning is in the log too
    wrong = {"openai": OpenAIProvider(api_key=wrong_key, prices=PRICES, base_url=server.openai_base_url)}
    with pytest.raises(ProviderRejected) as refused:
        TierCaller(wrong, breakers, RateLimits(client), NO_WAIT).complete(
            ["openai:gpt-4o"], REQUEST, on_call=records.append
        )
    assert "HTTP 401" in refused.value.reason
    assert "opened" in caplog.text and "gave no answer" in caplog.text
    texts = [caplog.text, json.dumps([r.as_dict() for r in records]), str(refused.value), repr(refused.value)]
    texts += [repr(caller), repr(records)]
    for key in (API_KEY, wrong_key):
        assert all(key not in text for text in texts)
