"""Deployments: named model endpoints a tier map can list, in the spirit of LiteLLM's model_list.

A deployment is one model behind one endpoint: its provider type (`openai` for any
OpenAI-compatible server, `anthropic`), base URL, the NAME of the environment variable holding
its key (never the key: the config file is not a secret store), price, context window,
capabilities and rate limit. The tier map names it by its name where the short form writes
`provider:model`; inside tierflow it is the model reference `<name>:<model>`, so breakers,
rate limits, prices and records keep one key per deployment.

Plain pydantic models: `worker/settings.py` embeds them. The SDK adapters are imported only
when `deployment_provider` builds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from tierflow.providers.pricing import Price, PriceSpec
from tierflow.providers.resilience.config import RateLimit

if TYPE_CHECKING:
    from tierflow.providers.base import Provider

PROVIDER_TYPES = ("openai", "anthropic")
# Provider names the short form already uses: a deployment may not take one as its name.
RESERVED_NAMES = frozenset({"fake", "openai", "anthropic"})
DEPLOYMENT_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Deployment(BaseModel):
    """One model behind one endpoint.

    Attributes:
        provider: the wire protocol: `openai` (OpenAI and compatible servers: vLLM, Ollama, the
            local provider server) or `anthropic`.
        model: the model name the endpoint is sent.
        base_url: the endpoint's root; None for the provider's own API.
        api_key_env: the environment variable the key is read from at start; None: the
            endpoint takes any key (a local server), which needs a base_url.
        price: USD per million tokens; None: the price table's entry for `provider:model`.
        context_window: tokens; None: the price table's, else no limit is known.
        capabilities: what the model can do (the kinds' `capabilities`); None: everything.
        rate_limit: the cluster-wide limit of this deployment; None: `rate_limit_default`.
        structured_outputs: send JSON schemas natively (turn off for servers without them).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["openai", "anthropic"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME)
    price: PriceSpec | None = None
    context_window: int | None = Field(default=None, gt=0)
    capabilities: tuple[str, ...] | None = None
    rate_limit: RateLimit | None = None
    structured_outputs: bool = True

    @model_validator(mode="before")
    @classmethod
    def _no_key_in_the_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError(
                "api_key: a key is never written in the config file; put it in an environment "
                "variable and name that variable in api_key_env"
            )
        return data

    @model_validator(mode="after")
    def _reachable(self) -> Deployment:
        if self.api_key_env is None and self.base_url is None:
            raise ValueError("api_key_env: a deployment on the provider's own API needs a key variable")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: {self.base_url!r} is not an http:// or https:// URL")
        return self

    def ref(self, name: str) -> str:
        """The model reference of this deployment inside tierflow."""
        return f"{name}:{self.model}"

    def table_ref(self) -> str:
        """The price table's key for the model this deployment serves."""
        return f"{self.provider}:{self.model}"


def deployment_provider(
    name: str, deployment: Deployment, key: SecretStr | None, prices: Mapping[str, Price]
) -> Provider:
    """The SDK adapter of one deployment, named `name` in model references and prices.

    Args:
        key: read by the settings from the variable `api_key_env` names; None: a local server.
    """
    api_key = key if key is not None else SecretStr("local")  # a local server takes any key
    if deployment.provider == "openai":
        from tierflow.providers.openai import OpenAIProvider

        return OpenAIProvider(api_key=api_key, prices=prices, base_url=deployment.base_url, name=name)
    from tierflow.providers.anthropic import AnthropicProvider

    return AnthropicProvider(
        api_key=api_key,
        prices=prices,
        base_url=deployment.base_url,
        name=name,
        structured_outputs=deployment.structured_outputs,
    )
