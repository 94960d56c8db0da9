"""Counts kept in Redis for what the store has no row of: reflect runs (those that publish
nothing leave no policy version) and the cluster rate limiter's refusals (a refused call is
never made, so no call record holds it).

Best effort: a Redis that cannot be reached loses a count, never a task or a call. Read by the
metrics collector (worker/metrics.py). Keys: `tierflow:metrics:reflect_runs` (a hash by result)
and the limiter's `<prefix>refused` (a hash by model reference).
"""

from __future__ import annotations

import logging

import redis

from tierflow.worker.settings import Settings

REFLECT_RUNS_KEY = "tierflow:metrics:reflect_runs"
log = logging.getLogger("tierflow.metrics")


def counts_redis(settings: Settings) -> redis.Redis | None:
    """The Redis the counts live in: the resilience store's, else the broker's; None without one."""
    url = settings.resilience_redis
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) if url else None


def count_reflect_run(settings: Settings, published: bool) -> None:
    client = counts_redis(settings)
    if client is None:
        return
    try:
        client.hincrby(REFLECT_RUNS_KEY, "published" if published else "unchanged", 1)
    except redis.RedisError as exc:
        log.warning("reflect run not counted: %s", exc)
    finally:
        client.close()


def read_counts(client: redis.Redis, key: str) -> dict[str, int]:
    """A counts hash as {field: count}; {} when Redis cannot be read."""
    try:
        raw = client.hgetall(key)
    except redis.RedisError as exc:
        log.warning("counts %s not read: %s", key, exc)
        return {}
    return {_text(field): int(value) for field, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
