"""The pure parts of the resilience layer: its settings, call records and what counts against a breaker."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tierflow.providers.base import Completion, CompletionRequest
from tierflow.providers.resilience.config import BreakerConfig, RateLimit
from tierflow.providers.resilience.ratelimit import estimate_tokens
from tierflow.providers.resilience.records import CallOutcome, CallRecord, breaker_signal, outcome_of
from tierflow.routing.errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)


@pytest.mark.parametrize(
    ("error", "outcome", "signal"),
    [
        (ProviderTimeout("p", "m", "timed out"), CallOutcome.TIMEOUT, False),
        (ProviderUnavailable("p", "m", "HTTP 503"), CallOutcome.UNAVAILABLE, False),
        (ProviderError("p", "m", "odd"), CallOutcome.ERROR, False),
        (ProviderRateLimited("p", "m", "HTTP 429", 2.0), CallOutcome.RATE_LIMITED, None),
        (ProviderRejected("p", "m", "HTTP 400"), CallOutcome.REJECTED, None),
    ],
)
def test_only_failures_of_the_model_count_against_its_breaker(
    error: ProviderError, outcome: CallOutcome, signal: bool | None
) -> None:
    assert outcome_of(error) is outcome
    assert breaker_signal(outcome) is signal


def test_a_success_counts_for_the_breaker() -> None:
    assert breaker_signal(CallOutcome.OK) is True


def test_call_records_are_json_ready_for_the_store() -> None:
    completion = Completion("hi", 12, 3, 0.0042, 0.1234567, "openai", "gpt-4o", "req-1")
    ok = CallRecord.succeeded("openai:gpt-4o", 2, completion)
    failed = CallRecord.failed(
        "openai:gpt-4o", 1, ProviderRateLimited("openai", "gpt-4o", "HTTP 429", 1.5), 0.2
    )
    assert json.loads(json.dumps(ok.as_dict())) == {
        "model": "openai:gpt-4o",
        "attempt": 2,
        "outcome": "ok",
        "input_tokens": 12,
        "output_tokens": 3,
        "cost_usd": 0.0042,
        "latency_s": 0.123457,
        "request_id": "req-1",
        "error": None,
        "retry_after": None,
    }
    assert failed.as_dict()["outcome"] == "rate_limited"
    assert (failed.error, failed.retry_after, failed.cost_usd, failed.input_tokens) == (
        "HTTP 429",
        1.5,
        0.0,
        0,
    )


def test_token_estimate_covers_the_prompt_and_the_whole_output_allowance() -> None:
    request = CompletionRequest(system="x" * 40, user="y" * 41, max_tokens=300)
    assert estimate_tokens(request) == 21 + 300


def test_breaker_defaults_are_valid_and_buckets_split_the_window() -> None:
    config = BreakerConfig()
    assert (config.window_s, config.min_calls, config.error_rate) == (30.0, 10, 0.5)
    assert config.bucket_ms == 3000
    assert (
        BreakerConfig(window_s=0.5, window_buckets=5, cooldown_s=1, probe_timeout_s=1, key_ttl_s=5).bucket_ms
        == 100
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"error_rate": 0.0},
        {"error_rate": 1.5},
        {"min_calls": 0},
        {"half_open_probes": 0},
        {"window_s": -1},
        {"cooldown_s": 60, "probe_timeout_s": 60, "key_ttl_s": 100},  # would forget an open breaker
        {"surprise": 1},
    ],
)
def test_invalid_breaker_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BreakerConfig.model_validate(fields)


def test_rate_limits_are_positive_or_absent() -> None:
    assert RateLimit().unlimited
    assert not RateLimit(tokens_per_minute=1000).unlimited
    with pytest.raises(ValidationError):
        RateLimit(requests_per_minute=0)
