"""Circuit breakers per provider model ("provider:model"), shared by every worker through Redis.

Owns the breaker state machine and where it lives:

    closed ──(error rate >= error_rate over window_s, at least min_calls)──> open
    open ──(cooldown_s passed; the next allow() turns it)──> half_open
    half_open ──(a probe succeeds)──> closed      (a fresh window)
    half_open ──(a probe fails)──> open           (another cooldown)

Each transition is one Lua script, so it is atomic across the cluster: while
half-open, at most `half_open_probes` callers in the whole cluster get a probe
slot at once. The window is a Redis hash of time buckets (calls and failures per
bucket); stale buckets are swept as new ones start. Keys are namespaced by
`BreakerConfig.key_prefix`, carry the model reference as a hash tag (both keys
of a model sit in one cluster slot) and expire `key_ttl_s` after their last write.

What counts as a failure is the caller's decision (`providers.resilience.records`);
this module only hears ok or not ok. Imports no SDK and no Celery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import redis

from tierflow.providers.base import ModelRef
from tierflow.providers.resilience.clock import LUA_NOW, Clock, now_arg, text
from tierflow.providers.resilience.config import BreakerConfig

log = logging.getLogger(__name__)

LUA_ALLOW = (
    LUA_NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'half_open_at', 'probes')
local state = h[1]
if not state or state == 'closed' then return 1 end
local cooldown, max_probes = tonumber(ARGV[2]), tonumber(ARGV[3])
local probe_timeout, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local probes = tonumber(h[4]) or 0
if state == 'open' then
  if now < tonumber(h[2]) + cooldown then return 0 end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'half_open_at', now, 'probes', 0)
  probes = 0
elseif probes >= max_probes and now >= (tonumber(h[3]) or 0) + probe_timeout then
  -- a whole round of probes never reported (their workers died): start a new round
  redis.call('HSET', KEYS[1], 'half_open_at', now, 'probes', 0)
  probes = 0
end
if probes >= max_probes then return 0 end
redis.call('HINCRBY', KEYS[1], 'probes', 1)
redis.call('PEXPIRE', KEYS[1], ttl)
return 2
"""
)

# Sums the window (buckets from `oldest` on) into `calls` and `failures`, listing stale fields.
LUA_SUM_WINDOW = """
local function sum_window(key, oldest)
  local calls, failures, stale = 0, 0, {}
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local bucket, kind = string.match(fields[i], '^(%d+):(%a)$')
    if bucket == nil or tonumber(bucket) < oldest then
      table.insert(stale, fields[i])
    elseif kind == 'n' then
      calls = calls + tonumber(fields[i + 1])
    else
      failures = failures + tonumber(fields[i + 1])
    end
  end
  return calls, failures, stale
end
"""

LUA_RECORD = (
    LUA_NOW
    + LUA_SUM_WINDOW
    + """
local ok, ttl = ARGV[2] == '1', tonumber(ARGV[7])
local function open(event, calls, failures)
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'probes', 0)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {'open', event, calls, failures}
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then return {'open', '', 0, 0} end  -- a call that started before it opened
if state == 'half_open' then
  if not ok then return open('reopened', 0, 0) end
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'closed', 'closed', 0, 0}
end
local bucket_ms, buckets = tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket = math.floor(now / bucket_ms)
local started = redis.call('HINCRBY', KEYS[2], bucket .. ':n', 1) == 1
if not ok then redis.call('HINCRBY', KEYS[2], bucket .. ':f', 1) end
redis.call('PEXPIRE', KEYS[2], ttl)
if ok and not started then return {'closed', '', 0, 0} end  -- a success cannot open it
local calls, failures, stale = sum_window(KEYS[2], bucket - buckets + 1)
if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
if not ok and calls >= tonumber(ARGV[5]) and failures >= tonumber(ARGV[6]) * calls then
  return open('opened', calls, failures)
end
return {'closed', '', calls, failures}
"""
)

LUA_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
  if (tonumber(redis.call('HGET', KEYS[1], 'probes')) or 0) > 0 then
    redis.call('HINCRBY', KEYS[1], 'probes', -1)
  end
end
return 0
"""

LUA_STATUS = (
    LUA_NOW
    + LUA_SUM_WINDOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probes')
local state, probes, retry_in = h[1] or 'closed', tonumber(h[3]) or 0, 0
if state == 'open' then
  local ends = tonumber(h[2]) + tonumber(ARGV[2])
  if now >= ends then state, probes = 'half_open', 0 else retry_in = ends - now end
end
local calls, failures = sum_window(KEYS[2], math.floor(now / tonumber(ARGV[3])) - tonumber(ARGV[4]) + 1)
return {state, calls, failures, probes, retry_in}
"""
)


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerStatus:
    """What the router needs to know of one model's breaker (provider health).

    Attributes:
        calls, failures: counted in the current window (zero while open or half-open).
        probes: probe calls in flight while half-open.
        retry_in_s: while open, seconds until it lets a probe through.
    """

    model_ref: str
    state: BreakerState
    calls: int
    failures: int
    probes: int
    retry_in_s: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


class BreakerHealth(Protocol):
    """What the router reads of breakers (Breakers, LocalBreakers, FallbackBreakers): their states."""

    def snapshot(self, model_refs: Iterable[str] | None = None) -> dict[str, BreakerStatus]: ...


class Breakers:
    """The circuit breakers of every provider model, kept in Redis for the whole cluster.

    Args:
        client: a redis-py client (decoded or not); thread-safe, shared by the worker's threads.
        config: thresholds, timings and the key namespace.
        clock: seconds as a float; None (production) uses the Redis server's clock.
    """

    def __init__(
        self, client: redis.Redis, config: BreakerConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        self.config = config or BreakerConfig()
        self._client = client
        self._clock = clock
        self._ttl_ms = str(int(self.config.key_ttl_s * 1000))
        self._allow = client.register_script(LUA_ALLOW)
        self._record = client.register_script(LUA_RECORD)
        self._release = client.register_script(LUA_RELEASE)
        self._status = client.register_script(LUA_STATUS)

    def __repr__(self) -> str:
        return f"Breakers(prefix={self.config.key_prefix!r})"

    def keys(self, model_ref: str) -> list[str]:
        """The Redis keys of one model's breaker: its state hash and its window hash."""
        tag = f"{self.config.key_prefix}{{{ModelRef.parse(model_ref)}}}"
        return [f"{tag}:state", f"{tag}:window"]

    def allow(self, model_ref: str) -> bool:
        """May a call to `model_ref` go now? While half-open, True takes one of the probe slots.

        A caller that was allowed must end with `record` (the call said something about
        the model) or `release` (it did not), so that a probe slot is given back.
        """
        config = self.config
        args = [
            now_arg(self._clock),
            str(int(config.cooldown_s * 1000)),
            str(config.half_open_probes),
            str(int(config.probe_timeout_s * 1000)),
            self._ttl_ms,
        ]
        return int(self._allow(keys=self.keys(model_ref)[:1], args=args)) > 0

    def record(self, model_ref: str, ok: bool) -> BreakerState:
        """Counts the outcome of one call to `model_ref`; returns the breaker's state after it."""
        config = self.config
        args = [
            now_arg(self._clock),
            "1" if ok else "0",
            str(config.bucket_ms),
            str(config.window_buckets),
            str(config.min_calls),
            repr(config.error_rate),
            self._ttl_ms,
        ]
        state, event, calls, failures = self._record(keys=self.keys(model_ref), args=args)
        log_transition(self.config, model_ref, text(event), int(calls), int(failures))
        return BreakerState(text(state))

    def release(self, model_ref: str) -> None:
        """Ends an allowed call that says nothing about the model (e.g. a rejected request)."""
        self._release(keys=self.keys(model_ref)[:1])

    def state(self, model_ref: str) -> BreakerState:
        return self.status(model_ref).state

    def status(self, model_ref: str) -> BreakerStatus:
        return self.snapshot([model_ref])[model_ref]

    def snapshot(self, model_refs: Iterable[str] | None = None) -> dict[str, BreakerStatus]:
        """The status of each model in `model_refs` (default: every model with a key in Redis).

        One round trip for all of them; a model Redis knows nothing of is closed.
        """
        refs = sorted(set(model_refs) if model_refs is not None else self._known_refs())
        config = self.config
        args = [now_arg(self._clock), str(int(config.cooldown_s * 1000)), str(config.bucket_ms)]
        args.append(str(config.window_buckets))
        pipe = self._client.pipeline(transaction=False)
        for ref in refs:
            self._status(keys=self.keys(ref), args=args, client=pipe)
        return {ref: _status_of(ref, reply) for ref, reply in zip(refs, pipe.execute(), strict=True)}

    def reset(self, model_ref: str) -> None:
        """Forgets a model's breaker: it is closed with an empty window (an operator's action)."""
        self._client.delete(*self.keys(model_ref))

    def _known_refs(self) -> set[str]:
        pattern = _glob_escape(self.config.key_prefix) + "{*}:*"
        refs = set()
        for key in self._client.scan_iter(match=pattern, count=1000):
            name = text(key)[len(self.config.key_prefix) :]
            refs.add(name[1 : name.rindex("}")])
        return refs


def log_transition(config: BreakerConfig, model_ref: str, event: str, calls: int, failures: int) -> None:
    """Logs a breaker's change of state: "opened", "reopened" or "closed" ("" for none)."""
    if event == "opened":
        log.warning(
            "circuit breaker %s opened: %d of %d calls failed within %g s; cooling down %g s",
            model_ref,
            failures,
            calls,
            config.window_s,
            config.cooldown_s,
        )
    elif event == "reopened":
        log.warning("circuit breaker %s: probe failed, open again for %g s", model_ref, config.cooldown_s)
    elif event == "closed":
        log.info("circuit breaker %s: probe succeeded, closed", model_ref)


def _status_of(ref: str, reply: list[object]) -> BreakerStatus:
    state, calls, failures, probes, retry_in_ms = reply
    return BreakerStatus(
        model_ref=ref,
        state=BreakerState(text(state)),
        calls=int(text(calls)),
        failures=int(text(failures)),
        probes=int(text(probes)),
        retry_in_s=int(text(retry_in_ms)) / 1000.0,
    )


def _glob_escape(prefix: str) -> str:
    """`prefix` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in prefix)
