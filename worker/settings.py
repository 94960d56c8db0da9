"""tierflow's one settings object, built once at start and passed in.

Read from environment variables prefixed `TIERFLOW_`, then from the TOML file
named by `TIERFLOW_CONFIG` (same keys, lower case, no prefix), then defaults.
This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tierflow.providers.deployments import DEPLOYMENT_NAME, RESERVED_NAMES, Deployment
from tierflow.providers.pricing import PriceOverride, PriceSpec, shipped_context_windows, shipped_prices
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
    # nearest: nearest examples or centroids; linear: a softmax regression fitted on the routes
    semantic_classifier: Literal["nearest", "linear"] = "nearest"
    # A route tree ({"domain": ["intent", ...]}): route by domain first, then intent; off when unset
    semantic_hierarchy: Path | None = None
    semantic_model: str = "text-embedding-3-small"  # with the openai encoder
    embeddings_cache_dir: Path = Path(".tierflow/embeddings")

    # Input
    max_payload_bytes: int = Field(default=64 * 1024, gt=0)
    # Kinds files (TOML) declaring job kinds beside the built-in ones; in the environment, paths
    # separated by commas (TIERFLOW_KINDS=a.toml,b.toml), in a config file a list. A relative path
    # in a config file is read from the config file's folder.
    kinds: Annotated[tuple[Path, ...], NoDecode] = ()

    # Models. A tier lists `provider:model` references (the short form: the provider's one key
    # and base URL below) or the names of deployments, each an endpoint of its own
    # (providers/deployments.py); prices override the shipped table (providers/prices.toml).
    tiers: dict[str, list[str]] = Field(default_factory=_default_tiers)
    deployments: dict[str, Deployment] = Field(default_factory=dict)
    prices: dict[str, tuple[float, float] | PriceSpec] = Field(default_factory=dict)
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
    # text, or json: one object per line with the job, batch and attempt ids (worker.logs)
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry traces (the otel extra, worker/tracing.py): off, console (stdout) or otlp
    # (OTLP over HTTP, the endpoint from the OTEL_EXPORTER_OTLP_* variables)
    traces: Literal["off", "console", "otlp"] = "off"
    traces_service_name: str = "tierflow"

    # HTTP API (`tierflow serve`): where uploads and batch output files live, and the size limits
    api_files_dir: Path = Path(".tierflow/files")
    api_max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    api_max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    api_max_batch_requests: int = Field(default=50_000, gt=0)
    api_chat_timeout_s: float = Field(default=120.0, gt=0)

    # Flower (`tierflow flower`): basic auth, required unless --insecure
    flower_user: str | None = None
    flower_password: SecretStr | None = None

    @field_validator("kinds", mode="before")
    @classmethod
    def _kinds_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(part.strip()) for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            return tuple(_config_relative(Path(str(part))) for part in value)
        return value

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
        return value

    @field_validator("deployments")
    @classmethod
    def _deployment_names(cls, value: dict[str, Deployment]) -> dict[str, Deployment]:
        for name in value:
            if not re.match(DEPLOYMENT_NAME, name) or name in RESERVED_NAMES:
                reserved = ", ".join(sorted(RESERVED_NAMES))
                raise ValueError(
                    f"deployment name {name!r}: lower-case letters, digits, - and _; not {reserved}"
                )
        return value

    @model_validator(mode="after")
    def _tier_entries(self) -> Settings:
        for tier, refs in self.tiers.items():
            for ref in refs:
                if ":" not in ref and ref not in self.deployments:
                    known = ", ".join(sorted(self.deployments)) or "none"
                    raise ValueError(
                        f"tiers.{tier}: {ref!r} is not provider:model, nor a deployment name"
                        f" (deployments: {known})"
                    )
        return self

    def tier_refs(self) -> dict[str, list[str]]:
        """The tier map with each deployment name as its model reference `<name>:<model>`."""
        return {
            tier: [self.deployments[r].ref(r) if r in self.deployments else r for r in refs]
            for tier, refs in self.tiers.items()
        }

    def deployment_key(self, name: str) -> SecretStr | None:
        """The key of deployment `name`, read from the environment variable it names."""
        variable = self.deployments[name].api_key_env
        if variable is None:
            return None
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(
                f"deployments.{name}.api_key_env", f"the environment variable {variable} is not set"
            )
        return SecretStr(value)

    def price_overrides(self) -> dict[str, PriceOverride]:
        """`prices`, then each deployment's price under its model reference: its own, else that
        of the model it serves (from `prices`, else the shipped table)."""
        table: dict[str, PriceOverride] = dict(self.prices)
        shipped = shipped_prices()
        for name, deployment in self.deployments.items():
            served = deployment.table_ref()
            price = deployment.price or table.get(served) or shipped.get(served)
            if price is not None:
                table[deployment.ref(name)] = price
        return table

    def context_windows(self) -> dict[str, int]:
        """Context windows of the tier map's models: the deployments', else the shipped table's."""
        shipped = shipped_context_windows()
        windows = {}
        for tier_refs in self.tier_refs().values():
            for ref in tier_refs:
                deployment = self.deployments.get(ref.split(":", 1)[0])
                table_ref = deployment.table_ref() if deployment else ref
                window = deployment.context_window if deployment and deployment.context_window else None
                window = window or shipped.get(table_ref)
                if window is not None:
                    windows[ref] = window
        return windows

    def model_capabilities(self) -> dict[str, tuple[str, ...]]:
        return {
            d.ref(name): d.capabilities for name, d in self.deployments.items() if d.capabilities is not None
        }

    def model_rate_limits(self) -> dict[str, RateLimit]:
        """Each deployment's rate limit under its model reference, then `rate_limits` over them."""
        limits = {d.ref(n): d.rate_limit for n, d in self.deployments.items() if d.rate_limit is not None}
        return {**limits, **self.rate_limits}

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


def _config_relative(path: Path) -> Path:
    config_file = os.environ.get("TIERFLOW_CONFIG")
    if path.is_absolute() or not config_file:
        return path
    return Path(config_file).parent / path


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning any invalid value into a ConfigError naming it."""
    config_file = os.environ.get("TIERFLOW_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise ConfigError("TIERFLOW_CONFIG", f"no such file: {config_file}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field, message = ".".join(str(part) for part in error["loc"]), str(error["msg"])
        if not field:  # a check across settings names its field first: "Value error, tiers.small: ..."
            named, _, reason = message.removeprefix("Value error, ").partition(": ")
            field, message = (named, reason) if reason and " " not in named else ("<settings>", message)
        where = f" (in {config_file} or TIERFLOW_{field.split('.')[0].upper()})" if config_file else ""
        raise ConfigError(field + where, message) from None
    except ValueError as exc:  # a TOML file that does not parse
        raise ConfigError(f"TIERFLOW_CONFIG={config_file}", str(exc)) from None
