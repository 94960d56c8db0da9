"""tierflow's one settings object, built once at start and passed in.

Read from environment variables prefixed `TIERFLOW_`, then from the TOML file
named by `TIERFLOW_CONFIG` (same keys, lower case, no prefix), then defaults.
This is the only module that reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tierflow.providers.resilience.config import BreakerConfig, RateLimit
from tierflow.routing.errors import ConfigError
from tierflow.routing.learning import LearningSettings
from tierflow.routing.policy import DEFAULT_TIER_MODELS
from tierflow.routing.states import Tier

EMBEDDED_BROKER = "memory://localhost/"
EMBEDDED_BACKEND = "cache+memory://"
LOCAL_RESILIENCE = "local"
RESILIENCE_CHOICES = (
    "a redis:// URL (breakers and rate limits shared by every worker) "
    "or local (each worker process keeps its own)"
)


def _default_tiers() -> dict[str, list[str]]:
    return {tier.value: list(models) for tier, models in DEFAULT_TIER_MODELS.items()}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIERFLOW_", extra="forbid", frozen=True)

    database_url: str = "sqlite:///tierflow.db"
    # Connections a process keeps open; `tierflow worker` raises it to its concurrency.
    db_pool_size: int = Field(default=10, gt=0)
    broker_url: str = EMBEDDED_BROKER
    result_backend: str = EMBEDDED_BACKEND

    # Celery reliability
    visibility_timeout_s: int = Field(default=3600, gt=0)
    # With a RabbitMQ broker (amqp://): durable quorum queues, and publisher confirms always.
    broker_quorum_queues: bool = True
    result_expires_hours: int = Field(default=24, gt=0)

    # Recovery (routing/recovery.py): a worker holds the jobs it works on for lease_s past its
    # latest beat (it beats every lease_s / 3); reconcile sends again a job whose lease lapsed
    # or whose message was lost, and, as a backstop, a held job with no progress for stage_timeout_s.
    lease_s: float = Field(default=30.0, gt=0)
    stage_timeout_s: float = Field(default=600.0, gt=0)
    max_redeliveries: int = Field(default=5, ge=0)
    reconcile_interval_s: float = Field(default=10.0, gt=0)
    # Beat runs `reflect` this often (0: never); it learns from at most reflect_window judged attempts.
    reflect_interval_s: float = Field(default=900.0, ge=0)
    reflect_window: int = Field(default=10_000, gt=0)
    # A worker re-reads the active policy version at most this often.
    policy_ttl_s: float = Field(default=30.0, ge=0)
    # The first policy version's learning target and guardrails (later versions carry their own).
    learning: LearningSettings = Field(default_factory=LearningSettings)

    # Knowledge base of policy articles for the support retriever (embedded mode reads the folder)
    kb_dir: Path = Path("examples/kb")

    # Semantic stage of the analysis: route examples ({"text", "intent"} JSON Lines); off when unset
    semantic_routes: Path | None = None
    semantic_encoder: Literal["local", "openai"] = "local"
    semantic_model: str = "text-embedding-3-small"  # with the openai encoder
    embeddings_cache_dir: Path = Path(".tierflow/embeddings")

    # Input
    max_payload_bytes: int = Field(default=64 * 1024, gt=0)

    # Models
    tiers: dict[str, list[str]] = Field(default_factory=_default_tiers)
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    fake_latency_scale: float = Field(default=1.0, ge=0)
    fake_failing_models: list[str] = Field(default_factory=list)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None

    # Resilience: breakers and rate limits shared through Redis, retries per call.
    # A redis:// URL, or "local" (per-process state); unset: the broker's Redis, when it is one.
    resilience_redis_url: str | None = None
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    rate_limits: dict[str, RateLimit] = Field(default_factory=dict)
    rate_limit_default: RateLimit = Field(default_factory=RateLimit)
    retry_max_attempts: int = Field(default=3, ge=1)
    retry_base_delay_s: float = Field(default=0.5, ge=0)
    retry_max_delay_s: float = Field(default=20.0, ge=0)
    retry_max_retry_after_s: float = Field(default=60.0, ge=0)
    call_timeout_s: float = Field(default=60.0, gt=0)

    # Embedded mode
    embedded_concurrency: int = Field(default=8, gt=0)
    log_level: str = "WARNING"

    # Flower (`tierflow flower`): basic auth, required unless --insecure
    flower_user: str | None = None
    flower_password: SecretStr | None = None

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - {tier.value for tier in Tier})
        if unknown:
            raise ValueError(f"unknown tiers: {', '.join(unknown)}")
        if len(value) < 2:
            raise ValueError("name at least two tiers (the ones named form the ladder, cheapest first)")
        for tier in Tier:
            if tier.value not in value:
                continue  # the ladder leaves it out
            if not value[tier.value]:
                raise ValueError(f"tier {tier.value} has no models")
            for ref in value[tier.value]:
                if ":" not in ref:
                    raise ValueError(f"model {ref!r} of tier {tier.value} is not provider:model")
        return value

    @field_validator("resilience_redis_url")
    @classmethod
    def _resilience_store(cls, value: str | None) -> str | None:
        if not value:
            return None  # set but empty (e.g. `${VAR:-}` in a compose file): as if unset
        if value == LOCAL_RESILIENCE:
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{RESILIENCE_CHOICES}, not {value.split('://')[0]!r}")
        return value

    @property
    def ladder(self) -> tuple[Tier, ...]:
        """The tiers the tier map names, cheapest first."""
        return tuple(tier for tier in Tier if tier.value in self.tiers)

    @property
    def resilience_redis(self) -> str | None:
        """The Redis breakers and rate limits are shared through: None when they are per-process
        ("local") or, in a single process without Redis, off."""
        if self.resilience_redis_url == LOCAL_RESILIENCE:
            return None
        if self.resilience_redis_url:
            return self.resilience_redis_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else None

    @property
    def resilience_local(self) -> bool:
        """Breakers and rate limits held by each process on its own (TIERFLOW_RESILIENCE_REDIS_URL=local)."""
        return self.resilience_redis_url == LOCAL_RESILIENCE

    def require_resilience_store(self) -> None:
        """Raise ConfigError when a worker would run with no say in where breakers and limits live:
        an amqp:// broker has no Redis to derive it from, and silently none would be a lie."""
        if self.broker_is_amqp and self.resilience_redis_url is None:
            reason = "an amqp:// broker has no Redis for breakers and rate limits: set it to "
            raise ConfigError("TIERFLOW_RESILIENCE_REDIS_URL", reason + RESILIENCE_CHOICES)

    @property
    def broker_is_amqp(self) -> bool:
        return self.broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))

    @property
    def embedded(self) -> bool:
        """True when the broker needs no server: the worker must run in this process."""
        return self.broker_url.startswith("memory://")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("TIERFLOW_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning any invalid value into a ConfigError naming it."""
    config_file = os.environ.get("TIERFLOW_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise ConfigError("TIERFLOW_CONFIG", f"no such file: {config_file}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "<settings>"
        where = f" (in {config_file} or TIERFLOW_{field.split('.')[0].upper()})" if config_file else ""
        raise ConfigError(field + where, error["msg"]) from None
    except ValueError as exc:  # a TOML file that does not parse
        raise ConfigError(f"TIERFLOW_CONFIG={config_file}", str(exc)) from None
