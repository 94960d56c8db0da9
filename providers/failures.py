"""How a failed HTTP call to a model provider becomes one of tierflow's ProviderErrors.

Owns the rules both SDK adapters share: which status means which error
(429 -> ProviderRateLimited, 408 -> ProviderTimeout, other 4xx -> ProviderRejected,
5xx -> ProviderUnavailable), reading Retry-After, and keeping secrets out of
error reasons. Imports no SDK: each adapter catches its own SDK's exceptions and
hands the status, headers and message to `error_for_status`.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

from tierflow.routing.errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

MAX_DETAIL_CHARS = 300
REDACTED = "[redacted]"
MALFORMED = "malformed response body"


def retry_after_s(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the provider asks to wait: `retry-after-ms`, else `retry-after` in seconds or as a date."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return _retry_after_date(headers.get("retry-after"), time.time() if now is None else now)


def _retry_after_date(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(0.0, float(email.utils.mktime_tz(parsed)) - now)
    except (TypeError, ValueError, OverflowError):
        return None


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` without any of `secrets` (and cut to a readable length)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "..."


def error_for_status(
    provider: str,
    model: str,
    status: int,
    headers: Mapping[str, str] | None,
    detail: str,
) -> ProviderError:
    """The ProviderError for an HTTP error status; `detail` must already be redacted."""
    reason = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if status == 429:
        return ProviderRateLimited(provider, model, reason, retry_after_s(headers))
    if status == 408:
        return ProviderTimeout(provider, model, reason, retry_after_s(headers))
    if 400 <= status < 500:
        return ProviderRejected(provider, model, reason)
    return ProviderUnavailable(provider, model, reason, retry_after_s(headers))
