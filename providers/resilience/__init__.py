"""Resilience of provider calls across the cluster: breakers, rate limits, fallback within a tier.

config.py     BreakerConfig, RateLimit (settings; no Redis import)
clock.py      whose clock the shared state runs on (Redis TIME unless a test injects one)
breaker.py    Breakers: a circuit breaker per "provider:model", state in Redis, atomic in Lua
ratelimit.py  RateLimits: requests and tokens per minute per "provider:model", token buckets in Redis
records.py    CallRecord, CallOutcome, and which outcomes count against a model's breaker
local.py      LocalBreakers, LocalRateLimits: the same state machines held by one process
fallback.py   FallbackBreakers, FallbackRateLimits: the Redis ones, with the local ones standing in
              while Redis is unreachable (SharedStore: logged once per outage, counted, retried)
tier.py       TierCaller: a tier's models in order behind breaker, limit and retries

State shared by workers lives in Redis only (the resilience store, TIERFLOW_RESILIENCE_REDIS_URL,
or `local`: per process); nothing here imports the SDKs or Celery.
This file imports nothing, so that settings can import `config` without loading Redis.
"""
