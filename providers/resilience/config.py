"""The settings of the resilience layer: circuit breakers and cluster rate limits.

Owns `BreakerConfig` and `RateLimit`, plain frozen pydantic models, so that
`worker/settings.py` can embed them (and parse them from TOML or the
environment) without importing Redis. Must not import redis, the SDKs or Celery.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_BREAKER_PREFIX = "tierflow:breaker:"
DEFAULT_RATE_LIMIT_PREFIX = "tierflow:ratelimit:"


class BreakerConfig(BaseModel):
    """How a circuit breaker of one provider model opens, cools down and closes again.

    Attributes:
        window_s: the sliding window over which the error rate is measured.
        window_buckets: the window is kept as this many time buckets; it slides one bucket at a time.
        min_calls: fewer calls than this in the window never open the breaker.
        error_rate: the share of failed calls in the window (0-1] that opens the breaker.
        cooldown_s: an open breaker refuses every call this long, then lets probes through.
        half_open_probes: probe calls allowed at once, across the cluster, while half-open.
        probe_timeout_s: a probe that has not reported after this long frees its slot
            (a worker died mid-call); keep it above the longest request timeout.
        key_prefix: namespace of the breaker keys in Redis.
        key_ttl_s: every key expires this long after its last write, so nothing lingers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: float = Field(default=30.0, gt=0)
    window_buckets: int = Field(default=10, ge=1, le=600)
    min_calls: int = Field(default=10, ge=1)
    error_rate: float = Field(default=0.5, gt=0, le=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)
    probe_timeout_s: float = Field(default=120.0, gt=0)
    key_prefix: str = Field(default=DEFAULT_BREAKER_PREFIX, min_length=1)
    key_ttl_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _keys_outlive_the_state_they_hold(self) -> BreakerConfig:
        needed = max(self.window_s, self.cooldown_s + self.probe_timeout_s)
        if self.key_ttl_s < needed:
            raise ValueError(
                f"key_ttl_s ({self.key_ttl_s}) must be at least max(window_s, cooldown_s + "
                f"probe_timeout_s) = {needed}, or an open breaker would forget it is open"
            )
        return self

    @property
    def bucket_ms(self) -> int:
        return max(1, round(self.window_s * 1000 / self.window_buckets))


class RateLimit(BaseModel):
    """A cluster-wide limit of one provider model; None means no limit on that dimension.

    Both limits are token buckets that hold one minute's allowance and refill
    continuously (limit / 60 per second), as the providers describe their own limits.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None


UNLIMITED = RateLimit()
