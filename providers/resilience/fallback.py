"""Shared breakers and limits that fall back to per-process state while their Redis is unreachable.

Owns `SharedStore` (is the shared Redis answering? how often has this process
stood in for it?) and the two wrappers, `FallbackBreakers` and
`FallbackRateLimits`, with the interfaces of the Redis classes, so TierCaller
and the routing context use them unchanged:

    shared Redis answers          -> the shared state (the whole cluster's breakers and limits)
    a call raises redis.RedisError -> this call, and every call for the next `retry_s`, goes to the
                                     per-process state (`providers.resilience.local`); logged once
                                     per outage, counted per call
    `retry_s` later                -> one caller tries Redis again; when it answers, the shared
                                     state is used again (logged)

While one thread tries Redis again, the others keep to the per-process state, so
a Redis that hangs costs one socket timeout per retry period, not one per call.
The state of the two sides is not merged: a breaker opened during an outage is
this process's alone, and an allowance spent locally is not charged to the cluster.
Imports no SDK and no Celery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import redis

from tierflow.providers.resilience.breaker import Breakers, BreakerState, BreakerStatus
from tierflow.providers.resilience.clock import Clock
from tierflow.providers.resilience.config import UNLIMITED, BreakerConfig, RateLimit
from tierflow.providers.resilience.local import LocalBreakers, LocalRateLimits
from tierflow.providers.resilience.ratelimit import RateLimits, reserved

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRY_S = 5.0


@dataclass(frozen=True)
class StoreStats:
    """What a process has seen of its shared resilience Redis (for a metrics endpoint).

    Attributes:
        shared: True while the shared state is in use (Redis answered last time it was asked).
        fallback_calls: breaker and limit operations served by the per-process state instead.
        outages: times Redis was found unreachable after it had answered (or at the first call).
        recoveries: times it answered again after an outage.
        last_error: the error of the latest outage ("" when there was none).
    """

    shared: bool
    fallback_calls: int
    outages: int
    recoveries: int
    last_error: str


class SharedStore:
    """The health of one shared resilience Redis, as one process sees it. Thread-safe.

    Args:
        name: the Redis URL with its password hidden, for the log.
        retry_s: how long after a failure the per-process state stands in before Redis is tried again.
        clock: seconds as a float; default time.monotonic.
    """

    def __init__(self, name: str, *, retry_s: float = DEFAULT_RETRY_S, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._fallback_calls = 0
        self._outages = 0
        self._recoveries = 0
        self._last_error = ""

    def __repr__(self) -> str:
        return f"SharedStore({self.name!r}, shared={self._down_since is None})"

    def stats(self) -> StoreStats:
        with self._lock:
            shared = self._down_since is None
            return StoreStats(shared, self._fallback_calls, self._outages, self._recoveries, self._last_error)

    def call(self, shared: Callable[[], T], local: Callable[[], T]) -> T:
        """`shared()` when Redis is in use or due to be tried again, else (or when it fails) `local()`.

        Errors other than redis.RedisError (e.g. ProviderRateLimited: the cluster's limit is
        used up) come from a Redis that answered, and are raised as they are.
        """
        if self._take_turn():
            try:
                result = shared()
            except redis.RedisError as error:
                self._failed(error)
            except BaseException:
                self._answered()
                raise
            else:
                self._answered()
                return result
        with self._lock:
            self._fallback_calls += 1
        return local()

    def _take_turn(self) -> bool:
        """May this caller ask Redis? Always while it answers; while it does not, one caller per retry_s."""
        if self._down_since is None:
            return True
        with self._lock:
            now = self._clock()
            if self._down_since is None or now >= self._retry_at:
                self._retry_at = now + self.retry_s
                return True
            return False

    def _failed(self, error: redis.RedisError) -> None:
        with self._lock:
            now = self._clock()
            self._retry_at = now + self.retry_s
            if self._down_since is not None:
                return
            self._down_since = now
            self._outages += 1
            self._last_error = f"{type(error).__name__}: {error}"
        log.warning(
            "resilience Redis %s unreachable (%s): breakers and rate limits fall back to this process's "
            "own state, trying Redis again every %g s",
            self.name,
            self._last_error,
            self.retry_s,
        )

    def _answered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            down_s = self._clock() - self._down_since
            self._down_since = None
            self._recoveries += 1
            served = self._fallback_calls
        log.warning(
            "resilience Redis %s answers again after %.1f s: breakers and rate limits are shared again "
            "(%d operations served by this process's own state so far)",
            self.name,
            down_s,
            served,
        )


class FallbackBreakers:
    """`Breakers` in Redis, with this process's `LocalBreakers` standing in while Redis is unreachable."""

    def __init__(self, shared: Breakers, local: LocalBreakers, store: SharedStore) -> None:
        self.shared, self.local, self.store = shared, local, store

    def __repr__(self) -> str:
        return f"FallbackBreakers({self.shared!r}, {self.store!r})"

    @property
    def config(self) -> BreakerConfig:
        return self.shared.config

    def allow(self, model_ref: str) -> bool:
        return self.store.call(lambda: self.shared.allow(model_ref), lambda: self.local.allow(model_ref))

    def record(self, model_ref: str, ok: bool) -> BreakerState:
        return self.store.call(
            lambda: self.shared.record(model_ref, ok), lambda: self.local.record(model_ref, ok)
        )

    def release(self, model_ref: str) -> None:
        self.store.call(lambda: self.shared.release(model_ref), lambda: self.local.release(model_ref))

    def state(self, model_ref: str) -> BreakerState:
        return self.status(model_ref).state

    def status(self, model_ref: str) -> BreakerStatus:
        return self.snapshot([model_ref])[model_ref]

    def snapshot(self, model_refs: Iterable[str] | None = None) -> dict[str, BreakerStatus]:
        refs = None if model_refs is None else list(model_refs)
        if refs == []:
            return {}
        return self.store.call(lambda: self.shared.snapshot(refs), lambda: self.local.snapshot(refs))

    def reset(self, model_ref: str) -> None:
        """Forgets the breaker on both sides."""
        self.local.reset(model_ref)
        self.store.call(lambda: self.shared.reset(model_ref), lambda: None)


class FallbackRateLimits:
    """`RateLimits` in Redis, with this process's `LocalRateLimits` standing in while Redis is unreachable."""

    def __init__(self, shared: RateLimits, local: LocalRateLimits, store: SharedStore) -> None:
        self.shared, self.local, self.store = shared, local, store

    def __repr__(self) -> str:
        return f"FallbackRateLimits({self.shared!r}, {self.store!r})"

    def limit_for(self, model_ref: str) -> RateLimit:
        return self.shared.limit_for(model_ref)

    def acquire(self, model_ref: str, tokens_estimate: int = 0) -> None:
        if self.limit_for(model_ref).unlimited:
            return  # no Redis round trip, so nothing to fall back from
        self.store.call(
            lambda: self.shared.acquire(model_ref, tokens_estimate),
            lambda: self.local.acquire(model_ref, tokens_estimate),
        )

    def settle(self, model_ref: str, tokens_estimate: int, tokens_used: int) -> None:
        tpm = self.limit_for(model_ref).tokens_per_minute
        if tpm is None or reserved(tpm, tokens_estimate) == tokens_used:
            return  # neither side would write: a call that no Redis answers proves nothing of it
        self.store.call(
            lambda: self.shared.settle(model_ref, tokens_estimate, tokens_used),
            lambda: self.local.settle(model_ref, tokens_estimate, tokens_used),
        )

    def reset(self, model_ref: str) -> None:
        self.local.reset(model_ref)
        self.store.call(lambda: self.shared.reset(model_ref), lambda: None)


def shared_with_fallback(
    client: redis.Redis,
    name: str,
    breaker: BreakerConfig,
    limits: Mapping[str, RateLimit],
    default: RateLimit = UNLIMITED,
    *,
    retry_s: float = DEFAULT_RETRY_S,
) -> tuple[FallbackBreakers, FallbackRateLimits]:
    """Breakers and limits shared through `client`, both falling back through one `SharedStore`."""
    store = SharedStore(name, retry_s=retry_s)
    breakers = FallbackBreakers(Breakers(client, breaker), LocalBreakers(breaker), store)
    rate_limits = FallbackRateLimits(
        RateLimits(client, limits, default=default), LocalRateLimits(limits, default=default), store
    )
    return breakers, rate_limits


def store_stats(breakers: object) -> StoreStats | None:
    """What this process has seen of its shared resilience Redis, from a runtime's breakers
    (`Runtime.breakers`); None when breakers are not shared (local, or none)."""
    return breakers.store.stats() if isinstance(breakers, FallbackBreakers) else None
