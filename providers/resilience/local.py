"""Breakers and rate limits held by one process: the same state machines as the Redis ones, in memory.

Owns `LocalBreakers` and `LocalRateLimits`, used when the resilience store is
`local` (TIERFLOW_RESILIENCE_REDIS_URL=local: each worker process has its own
breakers and spends its own allowance) and as the stand-in while the shared
Redis is unreachable (`providers.resilience.fallback`). They follow
breaker.py's and ratelimit.py's Lua scripts step for step, on the same
millisecond clock readings, so that both are held to the same tests:

    breaker: a window of time buckets (calls and failures per bucket, stale ones
             swept as new ones start); closed -> open at the error rate;
             open -> half_open after the cooldown, with at most half_open_probes
             probes at once (a round that never reports is restarted after
             probe_timeout_s); a probe's success closes it with a fresh window,
             its failure opens it for another cooldown.
    limits:  two token buckets per model, requests and tokens per minute, refilled
             continuously; taken from both or neither; settled into debt down to
             minus one minute's allowance.

A model's breaker is forgotten `key_ttl_s` after its last change, as its Redis
keys expire. Thread-safe (one lock per object). Imports no SDK, no Celery, no Redis client.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tierflow.providers.base import ModelRef
from tierflow.providers.resilience.breaker import BreakerState, BreakerStatus, log_transition
from tierflow.providers.resilience.clock import Clock
from tierflow.providers.resilience.config import UNLIMITED, BreakerConfig, RateLimit
from tierflow.providers.resilience.ratelimit import refusal, reserved

LOCAL_SCOPE = "rate limit of this process"


def _ms(clock: Clock) -> int:
    return round(clock() * 1000)


@dataclass
class _Breaker:
    """One model's breaker: its state fields and its window (bucket -> [calls, failures])."""

    state: BreakerState = BreakerState.CLOSED
    opened_at: int = 0
    half_open_at: int = 0
    probes: int = 0
    window: dict[int, list[int]] = field(default_factory=dict)
    written_at: int = 0

    def open(self, now: int) -> None:
        self.window.clear()
        self.state, self.opened_at, self.probes = BreakerState.OPEN, now, 0

    def sums(self, oldest: int) -> tuple[int, int]:
        counts = [count for bucket, count in self.window.items() if bucket >= oldest]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)


class LocalBreakers:
    """The circuit breakers of every provider model, as one process sees them.

    Args:
        config: thresholds and timings (`key_prefix` is not used: nothing is shared).
        clock: seconds as a float; default time.monotonic.
    """

    def __init__(self, config: BreakerConfig | None = None, *, clock: Clock = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        # the Lua scripts' integer arguments, so that both round alike
        self._cooldown_ms = int(self.config.cooldown_s * 1000)
        self._probe_timeout_ms = int(self.config.probe_timeout_s * 1000)
        self._ttl_ms = int(self.config.key_ttl_s * 1000)
        self._models: dict[str, _Breaker] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalBreakers(models={sorted(self._models)})"

    def _live(self, model_ref: str, now: int) -> _Breaker | None:
        """The breaker of `model_ref`; None when it has none or it expired (as its keys would)."""
        breaker = self._models.get(model_ref)
        if breaker is not None and now - breaker.written_at >= self._ttl_ms:
            del self._models[model_ref]
            return None
        return breaker

    def allow(self, model_ref: str) -> bool:
        """May a call to `model_ref` go now? While half-open, True takes one of the probe slots."""
        config = self.config
        with self._lock:
            now = _ms(self._clock)
            breaker = self._live(model_ref, now)
            if breaker is None or breaker.state is BreakerState.CLOSED:
                return True
            if breaker.state is BreakerState.OPEN:
                if now < breaker.opened_at + self._cooldown_ms:
                    return False
                breaker.state, breaker.half_open_at, breaker.probes = BreakerState.HALF_OPEN, now, 0
            elif (
                breaker.probes >= config.half_open_probes
                and now >= breaker.half_open_at + self._probe_timeout_ms
            ):
                breaker.half_open_at, breaker.probes = now, 0  # a round of probes never reported
            if breaker.probes >= config.half_open_probes:
                return False
            breaker.probes += 1
            breaker.written_at = now
            return True

    def record(self, model_ref: str, ok: bool) -> BreakerState:
        """Counts the outcome of one call to `model_ref`; returns the breaker's state after it."""
        with self._lock:
            now = _ms(self._clock)
            breaker = self._live(model_ref, now) or self._models.setdefault(model_ref, _Breaker())
            state, event, calls, failures = self._record(breaker, ok, now)
        log_transition(self.config, model_ref, event, calls, failures)
        return state

    def _record(self, breaker: _Breaker, ok: bool, now: int) -> tuple[BreakerState, str, int, int]:
        config = self.config
        if breaker.state is BreakerState.OPEN:
            return BreakerState.OPEN, "", 0, 0  # a call that started before it opened
        breaker.written_at = now
        if breaker.state is BreakerState.HALF_OPEN:
            if not ok:
                breaker.open(now)
                return BreakerState.OPEN, "reopened", 0, 0
            breaker.state, breaker.probes = BreakerState.CLOSED, 0
            breaker.window.clear()
            return BreakerState.CLOSED, "closed", 0, 0
        bucket = now // config.bucket_ms
        started = bucket not in breaker.window
        counts = breaker.window.setdefault(bucket, [0, 0])
        counts[0] += 1
        counts[1] += 0 if ok else 1
        if ok and not started:
            return BreakerState.CLOSED, "", 0, 0  # a success cannot open it
        oldest = bucket - config.window_buckets + 1
        for stale in [b for b in breaker.window if b < oldest]:
            del breaker.window[stale]
        calls, failures = breaker.sums(oldest)
        if not ok and calls >= config.min_calls and failures >= config.error_rate * calls:
            breaker.open(now)
            return BreakerState.OPEN, "opened", calls, failures
        return BreakerState.CLOSED, "", calls, failures

    def release(self, model_ref: str) -> None:
        """Ends an allowed call that says nothing about the model: gives a probe slot back."""
        with self._lock:
            breaker = self._models.get(model_ref)
            if breaker is not None and breaker.state is BreakerState.HALF_OPEN and breaker.probes > 0:
                breaker.probes -= 1

    def state(self, model_ref: str) -> BreakerState:
        return self.status(model_ref).state

    def status(self, model_ref: str) -> BreakerStatus:
        return self.snapshot([model_ref])[model_ref]

    def snapshot(self, model_refs: Iterable[str] | None = None) -> dict[str, BreakerStatus]:
        """The status of each model in `model_refs` (default: every model this process has heard of)."""
        with self._lock:
            now = _ms(self._clock)
            refs = sorted(set(model_refs) if model_refs is not None else self._models)
            return {ref: self._status(ref, now) for ref in refs}

    def _status(self, ref: str, now: int) -> BreakerStatus:
        config = self.config
        breaker = self._live(ref, now) or _Breaker()
        state, probes, retry_in = breaker.state, breaker.probes, 0
        if state is BreakerState.OPEN:
            ends = breaker.opened_at + self._cooldown_ms
            if now >= ends:
                state, probes = BreakerState.HALF_OPEN, 0
            else:
                retry_in = ends - now
        calls, failures = breaker.sums(now // config.bucket_ms - config.window_buckets + 1)
        return BreakerStatus(ref, state, calls, failures, probes, retry_in / 1000.0)

    def reset(self, model_ref: str) -> None:
        """Forgets a model's breaker: it is closed with an empty window."""
        with self._lock:
            self._models.pop(model_ref, None)


@dataclass
class _Buckets:
    """One model's two token buckets; None: not limited on that dimension (or not used yet)."""

    requests: float | None = None
    tokens: float | None = None
    stamped: int | None = None


class LocalRateLimits:
    """The rate limits of every provider model, spent by this process alone.

    Args:
        limits: the limit of each "provider:model"; models not named get `default`.
        default: the limit of models not in `limits`; unlimited unless set.
        clock: seconds as a float; default time.monotonic.
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        default: RateLimit = UNLIMITED,
        clock: Clock = time.monotonic,
    ) -> None:
        self._limits = {str(ModelRef.parse(ref)): limit for ref, limit in (limits or {}).items()}
        self._default = default
        self._clock = clock
        self._buckets: dict[str, _Buckets] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalRateLimits(limited={sorted(self._limits)})"

    def limit_for(self, model_ref: str) -> RateLimit:
        return self._limits.get(model_ref, self._default)

    def acquire(self, model_ref: str, tokens_estimate: int = 0) -> None:
        """Takes one request and `tokens_estimate` tokens of `model_ref`'s allowance, or raises.

        Raises:
            ProviderRateLimited: this process has used the allowance up; `retry_after` is the
                number of seconds until this call would fit.
        """
        limit = self.limit_for(model_ref)
        if limit.unlimited:
            return
        rpm, tpm = limit.requests_per_minute or 0, limit.tokens_per_minute or 0
        with self._lock:
            now = _ms(self._clock)
            buckets = self._buckets.setdefault(model_ref, _Buckets())
            requests, tokens = _refilled(buckets, rpm, tpm, now)
            wait, dimension = 0.0, ""
            if requests is not None and requests < 1:
                wait, dimension = (1 - requests) * 60000 / rpm, "requests per minute"
            need = min(max(tokens_estimate, 0), tpm)
            if tokens is not None and tokens < need and (need - tokens) * 60000 / tpm > wait:
                wait, dimension = (need - tokens) * 60000 / tpm, "tokens per minute"
            if wait > 0:
                raise refusal(model_ref, math.ceil(wait), dimension, LOCAL_SCOPE)
            _store(
                buckets,
                None if requests is None else requests - 1,
                None if tokens is None else tokens - need,
                now,
            )

    def settle(self, model_ref: str, tokens_estimate: int, tokens_used: int) -> None:
        """Corrects the tokens taken by `acquire(model_ref, tokens_estimate)` to what the call used."""
        limit = self.limit_for(model_ref)
        tpm = limit.tokens_per_minute
        if tpm is None:
            return
        taken = reserved(tpm, tokens_estimate)
        if taken == tokens_used:
            return
        with self._lock:
            now = _ms(self._clock)
            buckets = self._buckets.setdefault(model_ref, _Buckets())
            requests, tokens = _refilled(buckets, limit.requests_per_minute or 0, tpm, now)
            assert tokens is not None  # tpm > 0
            _store(buckets, requests, max(-tpm, min(tpm, tokens + taken - tokens_used)), now)

    def tokens_left(self, model_ref: str) -> float | None:
        """The tokens bucket's level now (negative: in debt); None when tokens are not limited."""
        tpm = self.limit_for(model_ref).tokens_per_minute
        if tpm is None:
            return None
        with self._lock:
            buckets = self._buckets.get(model_ref, _Buckets())
            return _refilled(buckets, 0, tpm, _ms(self._clock))[1]

    def reset(self, model_ref: str) -> None:
        """Gives a model its full allowance back."""
        with self._lock:
            self._buckets.pop(model_ref, None)


def _refilled(buckets: _Buckets, rpm: int, tpm: int, now: int) -> tuple[float | None, float | None]:
    """The levels of both buckets at `now` (None for a dimension without a limit)."""
    elapsed = max(0, now - (buckets.stamped if buckets.stamped is not None else now))

    def level(stored: float | None, cap: int) -> float | None:
        if cap <= 0:
            return None
        if stored is None:
            return float(cap)
        return min(float(cap), stored + elapsed * cap / 60000)

    return level(buckets.requests, rpm), level(buckets.tokens, tpm)


def _store(buckets: _Buckets, requests: float | None, tokens: float | None, now: int) -> None:
    buckets.stamped = now
    if requests is not None:
        buckets.requests = requests
    if tokens is not None:
        buckets.tokens = tokens
