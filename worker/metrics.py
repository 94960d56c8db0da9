"""tierflow's Prometheus metrics: a collector that reads the store, the broker and Redis at each scrape.

Served on the API's `/metrics` and by `tierflow metrics --port` beside the workers. The
figures come from the store (exact for the whole cluster, whichever worker did the work,
and not reset by a restart), the queue lengths from the broker (Redis or RabbitMQ), the
breakers' state, reflect runs and rate-limiter refusals from Redis (worker/run_counts.py).
Every name starts with `tierflow_`; the table is in the README.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import redis
from amqp.exceptions import ChannelError, NotFound
from kombu.connection import Connection
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tierflow.providers.resilience.config import DEFAULT_RATE_LIMIT_PREFIX
from tierflow.store import metrics as figures
from tierflow.store.db import transaction
from tierflow.tasks.runtime import Runtime
from tierflow.worker.app import ALL_QUEUES
from tierflow.worker.run_counts import REFLECT_RUNS_KEY, counts_redis, read_counts

log = logging.getLogger("tierflow.metrics")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# kombu's Redis transport keeps a queue's priorities in lists named queue, queue\x06\x163, ...
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def _histogram(name: str, doc: str, samples: dict[str, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["model"])
    for model, values in sorted(samples.items()):
        buckets = [(str(edge), sum(1 for v in values if v <= edge)) for edge in LATENCY_BUCKETS]
        buckets.append(("+Inf", len(values)))
        family.add_metric([model], buckets, sum(values))
    return family


class StoreCollector(Collector):
    """Reads the figures at each scrape; a service that cannot be read is left out, not fatal."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        broker = runtime.settings.broker_url
        self.broker = redis.Redis.from_url(broker, socket_timeout=2) if broker.startswith("redis") else None

    def collect(self) -> Iterator[Metric]:
        with transaction(self.runtime.sessions) as session:
            yield from self._jobs(session)
            yield from self._spend(session)
            yield from self._calls(session)
            yield from self._reviews_and_policy(session)
        yield from self._queues()
        yield from self._breakers()
        yield from self._redis_counts()

    def _jobs(self, session: Any) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "tierflow_jobs", "Jobs by kind, current tier and state", labels=["kind", "tier", "state"]
        )
        for kind, tier, state, n in figures.jobs_by_kind_tier_state(session):
            jobs.add_metric([kind, tier, state], n)
        attempts = CounterMetricFamily(
            "tierflow_attempts", "Attempts by tier and verdict", labels=["tier", "verdict"]
        )
        escalations = CounterMetricFamily(
            "tierflow_escalations", "Attempts escalated, by the tier left", labels=["tier"]
        )
        escalated: Counter[str] = Counter()
        for tier, verdict, n in figures.attempts_by_tier_verdict(session):
            attempts.add_metric([tier, verdict], n)
            if verdict == "escalate":
                escalated[tier] += n
        for tier, n in sorted(escalated.items()):
            escalations.add_metric([tier], n)
        yield from (jobs, attempts, escalations)

    def _spend(self, session: Any) -> Iterator[Metric]:
        cost = CounterMetricFamily(
            "tierflow_cost_usd", "Model cost in USD by tier and model", labels=["tier", "model"]
        )
        tokens = CounterMetricFamily(
            "tierflow_tokens", "Tokens by tier, model and direction", labels=["tier", "model", "direction"]
        )
        for tier, model, usd, tokens_in, tokens_out in figures.spend_by_tier_model(session):
            cost.add_metric([tier, model], usd)
            tokens.add_metric([tier, model, "input"], tokens_in)
            tokens.add_metric([tier, model, "output"], tokens_out)
        yield from (cost, tokens)

    def _calls(self, session: Any) -> Iterator[Metric]:
        outcomes: Counter[tuple[str, str]] = Counter()
        latencies: dict[str, list[float]] = defaultdict(list)
        for call in figures.model_calls(session):
            model = str(call.get("model"))
            outcomes[(model, str(call.get("outcome")))] += 1
            latencies[model].append(float(call.get("latency_s") or 0.0))
        calls = CounterMetricFamily(
            "tierflow_model_calls", "Model calls by model and outcome", labels=["model", "outcome"]
        )
        limited = CounterMetricFamily(
            "tierflow_rate_limited_calls",
            "Model calls refused with 429 or by the cluster rate limit",
            labels=["model"],
        )
        for (model, outcome), n in sorted(outcomes.items()):
            calls.add_metric([model, outcome], n)
            if outcome == "rate_limited":
                limited.add_metric([model], n)
        yield from (calls, limited)
        yield _histogram("tierflow_model_call_latency_seconds", "Model call latency by model", latencies)

    def _reviews_and_policy(self, session: Any) -> Iterator[Metric]:
        held, decided = figures.reviews(session)
        yield GaugeMetricFamily("tierflow_reviews_pending", "Jobs held for a person now", value=held)
        reviews = CounterMetricFamily("tierflow_reviews_decided", "Review decisions", labels=["decision"])
        for decision, n in sorted(decided.items()):
            reviews.add_metric([decision], n)
        yield reviews
        versions, rollbacks = figures.policy_versions(session)
        yield CounterMetricFamily("tierflow_policy_versions", "Policy versions published", value=versions)
        yield CounterMetricFamily(
            "tierflow_policy_rollbacks", "Policy versions that were rollbacks", value=rollbacks
        )

    def _queues(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tierflow_queue_length", "Messages waiting in a broker queue", labels=["queue"]
        )
        try:
            for queue, length in self._queue_lengths():
                family.add_metric([queue], length)
        except (redis.RedisError, OSError, ChannelError) as exc:
            log.warning("queue lengths not read: %s", exc)
            return
        yield family

    def _queue_lengths(self) -> Iterator[tuple[str, int]]:
        if self.broker is not None:
            for queue in ALL_QUEUES:
                yield queue, sum(int(self.broker.llen(queue + s)) for s in PRIORITY_SUFFIXES)
        elif self.runtime.settings.broker_is_amqp:
            # a passive declare answers the ready count of a queue without creating it
            broker = Connection(self.runtime.settings.broker_url, connect_timeout=2)  # type: ignore[no-untyped-call]
            with broker as connection:
                for queue in ALL_QUEUES:
                    yield queue, _amqp_length(connection, queue)

    def _redis_counts(self) -> Iterator[Metric]:
        client = counts_redis(self.runtime.settings)
        if client is None:
            return
        try:
            runs = read_counts(client, REFLECT_RUNS_KEY)
            refused = read_counts(client, f"{DEFAULT_RATE_LIMIT_PREFIX}refused")
        finally:
            client.close()
        reflect = CounterMetricFamily(
            "tierflow_reflect_runs",
            "Reflect runs by result (published a version, or unchanged)",
            labels=["result"],
        )
        for result in ("published", "unchanged"):
            reflect.add_metric([result], runs.get(result, 0))
        limiter = CounterMetricFamily(
            "tierflow_rate_limit_refusals",
            "Calls the cluster rate limiter refused before sending them, by model",
            labels=["model"],
        )
        for ref, n in sorted(refused.items()):
            limiter.add_metric([ref], n)
        yield from (reflect, limiter)

    def _breakers(self) -> Iterator[Metric]:
        breakers = self.runtime.breakers
        if breakers is None:
            return
        family = GaugeMetricFamily(
            "tierflow_breaker_state", "1 for the state each model's breaker is in", labels=["model", "state"]
        )
        try:
            refs = [ref for refs in self.runtime.settings.tier_refs().values() for ref in refs]
            for ref, status in sorted(breakers.snapshot(refs).items()):
                for state in ("closed", "open", "half_open"):
                    family.add_metric([ref, state], 1.0 if status.state.value == state else 0.0)
        except redis.RedisError as exc:
            log.warning("breakers not read: %s", exc)
            return
        yield family


def _amqp_length(connection: Connection, queue: str) -> int:
    """Messages ready in `queue` (0 when no one has declared it yet: nothing was sent to it)."""
    channel = connection.channel()  # type: ignore[no-untyped-call]
    try:
        return int(channel.queue_declare(queue, passive=True).message_count)
    except NotFound:  # the broker closes the channel on a 404; the next queue takes a new one
        return 0
    finally:
        with contextlib.suppress(ChannelError, OSError):
            channel.close()


def metrics_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(runtime))
    return registry
