"""TierCaller without breakers or limits, as the embedded mode (one process, no Redis) runs it."""

from __future__ import annotations

import pytest

from tierflow.providers.base import CompletionRequest
from tierflow.providers.fake import FakeProvider
from tierflow.providers.pricing import price_table
from tierflow.providers.resilience.records import CallOutcome, CallRecord
from tierflow.providers.resilience.tier import TierCaller
from tierflow.providers.retry import RetryPolicy
from tierflow.routing.errors import TierUnavailable

REQUEST = CompletionRequest(system="You answer questions.\nTask: answer", user="What is 12 * 7?")
RETRY = RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0)


def test_without_redis_a_tier_still_retries_and_falls_back() -> None:
    fake = FakeProvider(price_table({}), 0.0, failing_models=["fake:fake-small"])
    sleeps: list[float] = []
    caller = TierCaller({"fake": fake}, None, None, RETRY, sleep=sleeps.append)
    records: list[CallRecord] = []
    completion = caller.complete(["fake:fake-small", "fake:fake-medium"], REQUEST, on_call=records.append)
    assert completion.model == "fake-medium"
    assert [(r.model, r.attempt, r.outcome) for r in records] == [
        ("fake:fake-small", 1, CallOutcome.UNAVAILABLE),
        ("fake:fake-small", 2, CallOutcome.UNAVAILABLE),
        ("fake:fake-medium", 1, CallOutcome.OK),
    ]
    assert sleeps == [0.0]


def test_without_redis_a_tier_of_failing_models_is_unavailable() -> None:
    fake = FakeProvider(price_table({}), 0.0, failing_models=["fake:fake-small", "fake:fake-large"])
    caller = TierCaller({"fake": fake}, None, None, RETRY, sleep=lambda seconds: None)
    with pytest.raises(TierUnavailable) as out:
        caller.complete(["fake:fake-small", "fake:fake-large"], REQUEST)
    assert (out.value.provider, out.value.model) == ("tier", "fake:fake-small+fake:fake-large")
    assert out.value.reason == (
        "fake:fake-small: unavailable: injected failure; fake:fake-large: unavailable: injected failure"
    )
