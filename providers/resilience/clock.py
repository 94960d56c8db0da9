"""Whose clock the shared resilience state runs on, and how a Redis reply is read.

By default every script reads Redis's own clock (`TIME`), so that the workers of
a cluster agree on windows, cooldowns and refills however far their own clocks
drift. Tests inject a clock instead: its reading, in milliseconds, is passed to
the script, which then uses it. Imports nothing of the SDKs or Celery.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds as a float, e.g. `time.time`; only differences between readings matter."""

SERVER_TIME = "-1"

# ARGV[1] is the caller's clock in ms, or -1 for the Redis server's clock.
LUA_NOW = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""


def now_arg(clock: Clock | None) -> str:
    """The first script argument: the injected clock's reading in ms, or "use the server's"."""
    return SERVER_TIME if clock is None else str(round(clock() * 1000))


def text(value: object) -> str:
    """A Redis reply value as text, whether or not the client decodes responses."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
