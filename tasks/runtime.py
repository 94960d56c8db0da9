"""What a task needs at hand, built once per worker process from the app's settings."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tierflow.providers.base import ModelRef, Provider
from tierflow.providers.deployments import deployment_provider
from tierflow.providers.fake import FakeProvider
from tierflow.providers.pricing import Price, price_table
from tierflow.providers.resilience.breaker import BreakerHealth
from tierflow.providers.resilience.fallback import shared_with_fallback
from tierflow.providers.resilience.local import LocalBreakers, LocalRateLimits
from tierflow.providers.resilience.tier import TierCaller
from tierflow.providers.retry import RetryPolicy
from tierflow.routing.errors import ConfigError
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry
from tierflow.routing.kinds.spec import KindSpec
from tierflow.routing.policy import Policy
from tierflow.routing.retrieval import Hit, KnowledgeBase
from tierflow.routing.stages import SemanticGuess, SemanticStage
from tierflow.routing.states import Tier
from tierflow.store.db import make_engine, make_sessions, redact, transaction
from tierflow.store.knowledge import read_articles, search_postgres, stored_articles
from tierflow.store.policies import active_policy, seed_policy
from tierflow.worker.kinds import build_registry
from tierflow.worker.settings import Settings

if TYPE_CHECKING:
    from tierflow.providers.encoders import CachedEncoder, Encoder


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    providers: dict[str, Provider]
    tier_caller: TierCaller
    breakers: BreakerHealth | None
    kinds: KindRegistry = field(default_factory=builtin_registry)  # the kinds in force
    _policy: Policy | None = None
    _knowledge: KnowledgeBase | str | None = None
    _semantic: dict[Path, SemanticStage] = field(default_factory=dict)  # by routes file
    _policy_loaded_at: float = 0.0
    _encoders: dict[str, CachedEncoder] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def decision_prices(self) -> dict[str, tuple[float, float]]:
        """USD per million tokens in and out by model, as routing decisions read them: the
        settings' price table, built once (validating it per decision cost more than deciding)."""
        prices = price_table(self.settings.price_overrides())
        return {ref: (p.input_per_million, p.output_per_million) for ref, p in prices.items()}

    @property
    def stage_timeout(self) -> timedelta:
        return timedelta(seconds=self.settings.stage_timeout_s)

    def knowledge(self, text: str, limit: int, sections: tuple[str, ...] = ()) -> list[Hit]:
        """The policy articles that best match `text` (of `sections` only, when any are given):
        PostgreSQL full-text search when the articles are loaded there (`tierflow kb load`), else
        the in-process index over settings.kb_dir."""
        if self._knowledge is None:
            self._knowledge = self._open_knowledge()
        if isinstance(self._knowledge, KnowledgeBase):
            return self._knowledge.search(text, limit, sections)
        with transaction(self.sessions) as session:
            return search_postgres(session, text, limit, sections)

    def _open_knowledge(self) -> KnowledgeBase | str:
        if self.engine.dialect.name == "postgresql":
            with transaction(self.sessions) as session:
                if stored_articles(session):
                    return "postgresql"
        folder = self.settings.kb_dir
        return KnowledgeBase(read_articles(folder) if folder.is_dir() else [])

    def semantic(self, kind: KindSpec | None = None) -> SemanticStage | None:
        """The semantic stage for jobs of `kind`: fitted once per process from the kind's own routes
        file, else from settings.semantic_routes; None when neither is set."""
        own = kind.routing.semantic_routes if kind is not None else None
        routes = Path(own) if own is not None else self.settings.semantic_routes
        if routes is None:
            return None
        with self._lock:
            if routes not in self._semantic:
                self._semantic[routes] = build_semantic_stage(self.settings, routes)
            return self._semantic[routes]

    def policy(self) -> Policy:
        """The active policy version, re-read from the store at most every settings.policy_ttl_s."""
        with self._lock:
            if self._policy is None or time.monotonic() - self._policy_loaded_at > self.settings.policy_ttl_s:
                with transaction(self.sessions) as session:
                    self._policy = active_policy(session) or seed_policy(
                        session, default_policy(self.settings)
                    )
                self._policy_loaded_at = time.monotonic()
            return self._policy

    def forget_policy(self) -> None:
        """Read the active version again on the next `policy()` (after this process published one)."""
        with self._lock:
            self._policy = None

    def text_encoder(self, name: str) -> CachedEncoder:
        """The embedding encoder `name` ("local" or "openai") with the on-disk cache, built once."""
        with self._lock:
            if name not in self._encoders:
                self._encoders[name] = build_encoder(self.settings, name)
            return self._encoders[name]


def build_encoder(settings: Settings, name: str) -> CachedEncoder:
    """all-MiniLM-L6-v2 on the CPU ("local") or the OpenAI embeddings API ("openai"), cached on disk."""
    from tierflow.providers.encoders import CachedEncoder, LocalMiniLM, OpenAIEmbeddings

    inner: Encoder
    if name == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "local"
        inner = OpenAIEmbeddings(settings.semantic_model, api_key=key, base_url=settings.openai_base_url)
    elif name == "local":
        inner = LocalMiniLM()
    else:
        raise ConfigError("policy.learning.encoder", f"unknown encoder {name!r}: local or openai")
    return CachedEncoder(inner, settings.embeddings_cache_dir)


def build_semantic_stage(settings: Settings, routes_file: Path | None = None) -> SemanticStage:
    """The semantic stage fitted on `routes_file` (settings.semantic_routes when None) with
    settings.semantic_classifier, flat or along settings.semantic_hierarchy."""
    from tierflow.providers.labelled import read_labelled
    from tierflow.providers.semantic_fit import ClassifierKind, fit_classifier, predict

    path = routes_file or settings.semantic_routes
    assert path is not None
    encoder = build_encoder(settings, settings.semantic_encoder)
    inner = encoder.inner
    kind = ClassifierKind(settings.semantic_classifier)
    routes = fit_classifier(encoder, read_labelled(path), path, kind, settings.semantic_hierarchy)

    def guess(text: str) -> SemanticGuess:
        match = predict(routes, inner.encode([text]))[0]  # queries are not cached: each is new
        return SemanticGuess(match.route, match.score, match.decided, match.runner_up, match.low_score)

    return guess


def default_policy(settings: Settings) -> Policy:
    """The first policy version, from the settings: the tiers named form the ladder, cheapest
    first. With reflect off nothing learns from what exploration would show, so nothing explores."""
    learning = settings.learning
    if not settings.reflect_interval_s:
        learning = learning.model_copy(update={"explore_share": 0.0})
    return Policy(
        tier_models={Tier(name): tuple(models) for name, models in settings.tier_refs().items()},
        ladder=settings.ladder,
        learning=learning,
        context_windows=settings.context_windows(),
        model_capabilities=settings.model_capabilities(),
    )


def build_providers(settings: Settings, kinds: KindRegistry | None = None) -> dict[str, Provider]:
    """The fake (answering the plug-in experts of `kinds` offline), plus an SDK adapter for every
    other provider or deployment the tier map names."""
    prices = price_table(settings.price_overrides())
    providers: dict[str, Provider] = {
        "fake": FakeProvider(prices, settings.fake_latency_scale, settings.fake_failing_models, kinds)
    }
    named = {ModelRef.parse(ref).provider for refs in settings.tier_refs().values() for ref in refs}
    for name in sorted(named - set(providers)):
        if name in settings.deployments:
            key = settings.deployment_key(name)
            providers[name] = deployment_provider(name, settings.deployments[name], key, prices)
        else:
            providers[name] = _sdk_provider(name, settings, prices)
    return providers


def _sdk_provider(name: str, settings: Settings, prices: dict[str, Price]) -> Provider:
    if name not in ("openai", "anthropic"):
        raise ConfigError("tiers", f"unknown provider {name!r}; known: fake, openai, anthropic")
    key = settings.openai_api_key if name == "openai" else settings.anthropic_api_key
    base_url = settings.openai_base_url if name == "openai" else settings.anthropic_base_url
    if key is None and base_url is None:
        raise ConfigError(f"{name}_api_key", f"the tier map uses {name} models but no key is set")
    # A local OpenAI-compatible server (vLLM, Ollama, tierflow provider-server) takes any key.
    api_key = key if key is not None else SecretStr("local")
    if name == "openai":
        from tierflow.providers.openai import OpenAIProvider

        return OpenAIProvider(api_key=api_key, prices=prices, base_url=base_url)
    from tierflow.providers.anthropic import AnthropicProvider

    return AnthropicProvider(api_key=api_key, prices=prices, base_url=base_url)


def build_tier_caller(
    settings: Settings, providers: dict[str, Provider]
) -> tuple[TierCaller, BreakerHealth | None]:
    """Retries per call everywhere; breakers and rate limits shared through Redis when there is one
    (this process's own while it is unreachable), per-process with the `local` store, else none."""
    retry = RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        base_delay_s=settings.retry_base_delay_s,
        max_delay_s=settings.retry_max_delay_s,
        max_retry_after_s=settings.retry_max_retry_after_s,
    )
    if settings.resilience_local:
        local = LocalBreakers(settings.breaker)
        limits = LocalRateLimits(settings.model_rate_limits(), default=settings.rate_limit_default)
        return TierCaller(providers, local, limits, retry), local
    url = settings.resilience_redis
    if url is None:
        return TierCaller(providers, None, None, retry), None
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    breakers, shared_limits = shared_with_fallback(
        client, redact(url), settings.breaker, settings.model_rate_limits(), settings.rate_limit_default
    )
    return TierCaller(providers, breakers, shared_limits, retry), breakers


# Connections a process may open beyond its pool, for the moments a task holds two at once.
POOL_OVERFLOW = 2


def build_runtime(settings: Settings) -> Runtime:
    pool = max(settings.db_pool_size, settings.embedded_concurrency if settings.embedded else 0)
    # No ping before each checkout (it doubled the transactions per job): a connection that
    # PostgreSQL dropped fails its task with OperationalError, SQLAlchemy discards the pool's
    # connections of before, and the task is retried (worker/app.py's TierflowTask).
    engine = make_engine(settings.database_url, pool_size=pool, max_overflow=POOL_OVERFLOW, pre_ping=False)
    kinds = build_registry(settings)
    providers = build_providers(settings, kinds)
    caller, breakers = build_tier_caller(settings, providers)
    return Runtime(settings, engine, make_sessions(engine), providers, caller, breakers, kinds)


_runtimes: dict[tuple[int, int], Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime_for(app: Any) -> Runtime:
    """The runtime of this process for this app (rebuilt after a fork: engines do not cross forks).

    `celery.current_app` is a proxy, a new object each time: the key is the app behind it."""
    app = app._get_current_object() if hasattr(app, "_get_current_object") else app
    key = (os.getpid(), id(app))
    with _runtimes_lock:
        if key not in _runtimes:
            _runtimes[key] = build_runtime(app.tierflow_settings)
        return _runtimes[key]


def forget_runtime(app: Any) -> None:
    """Drop this process's runtime for `app` (its engine is the caller's to dispose)."""
    with _runtimes_lock:
        _runtimes.pop((os.getpid(), id(app)), None)
