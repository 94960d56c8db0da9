"""HTTP failures of provider calls as ProviderErrors: status mapping, Retry-After, redaction."""

from __future__ import annotations

import email.utils

import pytest

from tierflow.providers.failures import error_for_status, redact, retry_after_s
from tierflow.routing.errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, ProviderRejected),
        (401, ProviderRejected),
        (404, ProviderRejected),
        (408, ProviderTimeout),
        (422, ProviderRejected),
        (429, ProviderRateLimited),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (529, ProviderUnavailable),
    ],
)
def test_status_codes_map_to_the_error_tree(status: int, error_type: type[ProviderError]) -> None:
    error = error_for_status("openai", "gpt-4o", status, {}, "detail")
    assert type(error) is error_type
    assert (error.provider, error.model, error.reason) == ("openai", "gpt-4o", f"HTTP {status}: detail")


def test_rate_limit_carries_retry_after() -> None:
    error = error_for_status("p", "m", 429, {"retry-after": "7"}, "")
    assert error.retry_after == 7.0
    assert error.reason == "HTTP 429"


def test_rejections_never_carry_retry_after() -> None:
    assert error_for_status("p", "m", 400, {"retry-after": "7"}, "").retry_after is None


def test_retry_after_prefers_milliseconds_then_seconds_then_a_date() -> None:
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "1.5"}) == 1.5
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now) == pytest.approx(30.0)
    assert retry_after_s({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0


@pytest.mark.parametrize(
    "headers", [None, {}, {"retry-after": "soon"}, {"retry-after": "-3"}, {"retry-after": "nan"}]
)
def test_unusable_retry_after_is_none(headers: dict[str, str] | None) -> None:
    assert retry_after_s(headers) is None


def test_redact_removes_secrets_and_cuts_long_text() -> None:
    assert redact("bad key sk-123 given", ("sk-123", "")) == "bad key [redacted] given"
    long = redact("x" * 1000, ())
    assert len(long) < 400 and long.endswith("...")
