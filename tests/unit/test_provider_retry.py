"""The retry policy of provider calls: what is retried, how long it waits, when it stops."""

from __future__ import annotations

import pytest

from tierflow.providers.retry import RetryPolicy, backoff_ceiling, call_with_retries, retry_delay
from tierflow.routing.errors import (
    ConfigError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

POLICY = RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=3.0, max_retry_after_s=10.0)


def timeout() -> ProviderTimeout:
    return ProviderTimeout("openai", "gpt-4o", "request timed out")


@pytest.mark.parametrize(
    "error",
    [
        ProviderTimeout("p", "m", "timed out"),
        ProviderRateLimited("p", "m", "429"),
        ProviderUnavailable("p", "m", "503"),
    ],
)
def test_transient_provider_errors_are_retried(error: ProviderError) -> None:
    assert retry_delay(POLICY, error, 1, random_fraction=0.5) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "error",
    [
        ProviderRejected("p", "m", "HTTP 400"),
        ProviderError("p", "m", "other"),
        ValueError("bug"),
        KeyboardInterrupt(),
    ],
)
def test_rejections_and_foreign_errors_are_not_retried(error: BaseException) -> None:
    assert retry_delay(POLICY, error, 1, random_fraction=0.5) is None


def test_backoff_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    ceilings = [backoff_ceiling(POLICY, attempt) for attempt in range(1, 7)]
    assert ceilings == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_backoff_ceiling_survives_huge_attempt_numbers() -> None:
    assert backoff_ceiling(POLICY, 10_000) == 3.0


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    assert retry_delay(POLICY, timeout(), 3, random_fraction=0.0) == 0.0
    assert retry_delay(POLICY, timeout(), 3, random_fraction=0.999) == pytest.approx(1.998)
    assert retry_delay(POLICY, timeout(), 3, random_fraction=7.0) == 2.0  # out-of-range draws are clamped


def test_attempts_are_bounded() -> None:
    assert retry_delay(POLICY, timeout(), 3, random_fraction=0.5) is not None
    assert retry_delay(POLICY, timeout(), 4, random_fraction=0.5) is None
    assert retry_delay(RetryPolicy(max_attempts=1), timeout(), 1, random_fraction=0.5) is None


def test_retry_after_is_a_lower_bound_on_the_wait() -> None:
    limited = ProviderRateLimited("p", "m", "429", retry_after=2.5)
    assert retry_delay(POLICY, limited, 1, random_fraction=0.0) == 2.5
    short = ProviderRateLimited("p", "m", "429", retry_after=0.1)
    assert retry_delay(POLICY, short, 3, random_fraction=0.5) == pytest.approx(1.0)


def test_a_retry_after_beyond_the_bound_gives_up_at_once() -> None:
    limited = ProviderUnavailable("p", "m", "503", retry_after=30.0)
    assert retry_delay(POLICY, limited, 1, random_fraction=0.0) is None


def test_no_retry_that_cannot_start_before_the_deadline() -> None:
    assert retry_delay(POLICY, timeout(), 2, random_fraction=0.5, remaining_s=0.4) is None
    assert retry_delay(POLICY, timeout(), 2, random_fraction=0.5, remaining_s=0.6) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay_s": -1.0},
        {"base_delay_s": 5.0, "max_delay_s": 1.0},
        {"max_retry_after_s": -1},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


class Flaky:
    """A call that fails with the given errors, in order, then returns "done"."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_call_with_retries_waits_the_drawn_delays_then_succeeds() -> None:
    call = Flaky(timeout(), ProviderRateLimited("p", "m", "429", retry_after=1.5))
    slept: list[float] = []
    retried: list[tuple[str, int, float]] = []
    result = call_with_retries(
        call,
        POLICY,
        sleep=slept.append,
        draw=lambda: 0.5,
        on_retry=lambda error, attempt, delay: retried.append((type(error).__name__, attempt, delay)),
    )
    assert result == "done"
    assert call.calls == 3
    assert slept == [0.25, 1.5]
    assert retried == [("ProviderTimeout", 1, 0.25), ("ProviderRateLimited", 2, 1.5)]


def test_call_with_retries_raises_the_last_error_after_max_attempts() -> None:
    errors = [ProviderUnavailable("p", "m", f"503 #{n}") for n in range(1, 6)]
    call = Flaky(*errors)
    slept: list[float] = []
    with pytest.raises(ProviderUnavailable) as raised:
        call_with_retries(call, POLICY, sleep=slept.append, draw=lambda: 1.0)
    assert call.calls == POLICY.max_attempts
    assert raised.value is errors[POLICY.max_attempts - 1]
    assert slept == [0.5, 1.0, 2.0]


def test_call_with_retries_does_not_retry_a_rejection() -> None:
    call = Flaky(ProviderRejected("p", "m", "HTTP 400"))
    slept: list[float] = []
    with pytest.raises(ProviderRejected):
        call_with_retries(call, POLICY, sleep=slept.append, draw=lambda: 0.5)
    assert call.calls == 1
    assert slept == []


def test_call_with_retries_stops_at_the_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    call = Flaky(*(timeout() for _ in range(5)))
    with pytest.raises(ProviderTimeout):
        call_with_retries(call, POLICY, deadline_s=1.0, sleep=sleep, draw=lambda: 1.0, clock=lambda: now[0])
    # waits 0.5 (t=0.5), then 1.0 would end past the deadline: two attempts in all
    assert call.calls == 2
    assert now[0] == 0.5
