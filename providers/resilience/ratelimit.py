"""Cluster-wide rate limits per provider model: requests and tokens per minute, kept in Redis.

Owns the limiter. Each limited model has one Redis hash holding two token
buckets: requests (capacity requests_per_minute) and tokens (capacity
tokens_per_minute), both refilled continuously at limit / 60 per second. One Lua
script takes from both buckets or from neither, so concurrent workers never
overspend, and a refusal says how long until there is room (the `retry_after`
of ProviderRateLimited, which lets the Celery task retry with a countdown
instead of holding a worker slot).

A call reserves its estimated tokens up front; `settle` gives back (or takes)
the difference once the provider has reported real usage, so a bucket can go
into debt, down to minus one minute's allowance. An estimate above the whole
minute's allowance is clamped to it, so a large request waits for a full bucket
instead of never going. A model without a configured limit costs no Redis round
trip. Imports no SDK and no Celery.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import redis

from tierflow.providers.base import CompletionRequest, ModelRef
from tierflow.providers.resilience.clock import LUA_NOW, Clock, now_arg, text
from tierflow.providers.resilience.config import DEFAULT_RATE_LIMIT_PREFIX, UNLIMITED, RateLimit
from tierflow.routing.errors import ProviderRateLimited

KEY_TTL_MS = 180_000  # a bucket refills from a full minute of debt in two minutes; then it is full anyway
NO_LIMIT = "0"

# Refills the buckets of KEYS[1] to `now`: returns requests level, tokens level (nil when unlimited).
LUA_REFILL = """
local function refill(rpm, tpm)
  local h = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
  local elapsed = math.max(0, now - (tonumber(h[3]) or now))
  local function level(stored, cap)
    if cap <= 0 then return nil end
    if stored == nil then return cap end
    return math.min(cap, stored + elapsed * cap / 60000)
  end
  return level(tonumber(h[1]), rpm), level(tonumber(h[2]), tpm)
end
local function store(r, t)
  redis.call('HSET', KEYS[1], 'ts', now)
  if r ~= nil then redis.call('HSET', KEYS[1], 'r', r) end
  if t ~= nil then redis.call('HSET', KEYS[1], 't', t) end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
"""

# ARGV: now, requests per minute (0 = none), tokens per minute (0 = none), tokens, ttl.
# Returns {1, ''} when granted, {0, wait_ms, dimension} when refused.
LUA_ACQUIRE = (
    LUA_NOW
    + LUA_REFILL
    + """
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local r, t = refill(rpm, tpm)
local wait, dimension = 0, ''
if r ~= nil and r < 1 then wait, dimension = (1 - r) * 60000 / rpm, 'requests per minute' end
local need = math.min(tokens, math.max(tpm, 0))
if t ~= nil and t < need and (need - t) * 60000 / tpm > wait then
  wait, dimension = (need - t) * 60000 / tpm, 'tokens per minute'
end
if wait > 0 then return {0, tostring(math.ceil(wait)), dimension} end
store(r and r - 1, t and t - need)
return {1, '0', ''}
"""
)

# ARGV: now, requests per minute, tokens per minute, tokens to give back (negative: to take), ttl.
LUA_SETTLE = (
    LUA_NOW
    + LUA_REFILL
    + """
local tpm = tonumber(ARGV[3])
local r, t = refill(tonumber(ARGV[2]), tpm)
if t == nil then return 0 end
store(r, math.max(-tpm, math.min(tpm, t + tonumber(ARGV[4]))))
return 1
"""
)


def estimate_tokens(request: CompletionRequest) -> int:
    """Tokens a request may use at most: its prompt (about four characters a token) and max_tokens."""
    return (len(request.system) + len(request.user) + 3) // 4 + request.max_tokens


def reserved(tokens_per_minute: int, tokens_estimate: int) -> int:
    """The tokens `acquire` took for an estimate: at most a whole minute's allowance."""
    return min(max(tokens_estimate, 0), tokens_per_minute)


def refusal(
    model_ref: str, wait_ms: int, dimension: str, scope: str = "cluster rate limit"
) -> ProviderRateLimited:
    """The error of a refused acquire: which allowance is used up, and the ms until the call fits."""
    model = ModelRef.parse(model_ref)
    reason = f"{scope}: {dimension} used up"
    return ProviderRateLimited(model.provider, model.model, reason, wait_ms / 1000.0)


class RateLimits:
    """The rate limits of every provider model, held by Redis for the whole cluster.

    Args:
        client: a redis-py client (decoded or not).
        limits: the limit of each "provider:model"; models not named get `default`.
        default: the limit of models not in `limits`; unlimited unless set.
        key_prefix: namespace of the limiter keys in Redis.
        clock: seconds as a float; None (production) uses the Redis server's clock.
    """

    def __init__(
        self,
        client: redis.Redis,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        default: RateLimit = UNLIMITED,
        key_prefix: str = DEFAULT_RATE_LIMIT_PREFIX,
        clock: Clock | None = None,
    ) -> None:
        self._limits = {str(ModelRef.parse(ref)): limit for ref, limit in (limits or {}).items()}
        self._default = default
        self._prefix = key_prefix
        self._clock = clock
        self._client = client
        self._acquire = client.register_script(LUA_ACQUIRE)
        self._settle = client.register_script(LUA_SETTLE)

    def __repr__(self) -> str:
        return f"RateLimits(prefix={self._prefix!r}, limited={sorted(self._limits)})"

    def limit_for(self, model_ref: str) -> RateLimit:
        return self._limits.get(model_ref, self._default)

    def key(self, model_ref: str) -> str:
        return f"{self._prefix}{{{ModelRef.parse(model_ref)}}}"

    def acquire(self, model_ref: str, tokens_estimate: int = 0) -> None:
        """Takes one request and `tokens_estimate` tokens of `model_ref`'s allowance, or raises.

        Raises:
            ProviderRateLimited: the cluster has used the allowance up; `retry_after` is the
                number of seconds until this call would fit.
        """
        limit = self.limit_for(model_ref)
        if limit.unlimited:
            return
        granted, wait_ms, dimension = self._acquire(
            keys=[self.key(model_ref)], args=self._args(limit, max(tokens_estimate, 0))
        )
        if not int(granted):
            self._count_refusal(model_ref)
            raise refusal(model_ref, int(text(wait_ms)), text(dimension))

    @property
    def refused_key(self) -> str:
        """The hash of refusals by model reference, for the metrics (`tierflow_rate_limit_refusals`)."""
        return f"{self._prefix}refused"

    def _count_refusal(self, model_ref: str) -> None:
        with contextlib.suppress(redis.RedisError):  # a count lost, not a call: the refusal stands
            self._client.hincrby(self.refused_key, model_ref, 1)

    def settle(self, model_ref: str, tokens_estimate: int, tokens_used: int) -> None:
        """Corrects the tokens taken by `acquire(model_ref, tokens_estimate)` to what the call used."""
        limit = self.limit_for(model_ref)
        if limit.tokens_per_minute is None:
            return
        taken = reserved(limit.tokens_per_minute, tokens_estimate)
        if taken != tokens_used:
            self._settle(keys=[self.key(model_ref)], args=self._args(limit, taken - tokens_used))

    def reset(self, model_ref: str) -> None:
        """Gives a model its full allowance back (an operator's action)."""
        self._client.delete(self.key(model_ref))

    def _args(self, limit: RateLimit, tokens: int) -> list[str]:
        return [
            now_arg(self._clock),
            str(limit.requests_per_minute or NO_LIMIT),
            str(limit.tokens_per_minute or NO_LIMIT),
            str(tokens),
            str(KEY_TTL_MS),
        ]
