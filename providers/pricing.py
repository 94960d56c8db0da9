"""Prices per million tokens, the cost of a call from its usage, and the lookup every provider uses.

The defaults are the table shipped as data in `providers/prices.toml` (list prices in USD per
million input / cached input / cache write / output tokens, and context windows); settings
override or extend them (`prices = {"openai:gpt-4o-mini" = [0.15, 0.60]}`, or a table with
`input`, `output`, `cached_input`, `cache_write`), and a deployment's `price` overrides both.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tierflow.routing.errors import ConfigError

PRICE_FILE = "prices.toml"


class PriceSpec(BaseModel):
    """One price as settings and the shipped table write it: USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)  # None: priced as input
    cache_write: float | None = Field(default=None, ge=0)  # None: priced as input

    def price(self) -> Price:
        return Price(self.input, self.output, self.cached_input, self.cache_write)


@dataclass(frozen=True)
class Price:
    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None
    cache_write_per_million: float | None = None

    def cost(
        self, input_tokens: int, output_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        """USD of a call. `input_tokens` counts every input token, the cached ones among them:
        `cached_tokens` read from the prompt cache and `cache_write_tokens` written to it."""
        cached_rate = (
            self.input_per_million
            if self.cached_input_per_million is None
            else (self.cached_input_per_million)
        )
        write_rate = (
            self.input_per_million if self.cache_write_per_million is None else (self.cache_write_per_million)
        )
        plain = max(input_tokens - cached_tokens - cache_write_tokens, 0)
        total = (
            plain * self.input_per_million
            + cached_tokens * cached_rate
            + cache_write_tokens * write_rate
            + output_tokens * self.output_per_million
        )
        return total / 1e6


PriceOverride = tuple[float, float] | PriceSpec | Price


@cache
def _shipped() -> dict[str, dict[str, Any]]:
    text = resources.files("tierflow.providers").joinpath(PRICE_FILE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def shipped_prices() -> dict[str, Price]:
    """The shipped table's prices by "provider:model"."""
    table = {}
    for ref, entry in _shipped().items():
        spec = PriceSpec.model_validate({k: v for k, v in entry.items() if k != "context_window"})
        table[ref] = spec.price()
    return table


def shipped_context_windows() -> dict[str, int]:
    """The shipped table's context windows in tokens by "provider:model"."""
    return {ref: int(e["context_window"]) for ref, e in _shipped().items() if "context_window" in e}


def as_price(value: PriceOverride) -> Price:
    if isinstance(value, Price):
        return value
    return value.price() if isinstance(value, PriceSpec) else Price(*value)


def price_table(
    overrides: Mapping[str, PriceOverride], deployments: Mapping[str, PriceOverride] | None = None
) -> dict[str, Price]:
    """The shipped prices, then the settings' `prices`, then the deployments' own prices."""
    table = shipped_prices()
    table.update({ref: as_price(value) for ref, value in overrides.items()})
    table.update({ref: as_price(value) for ref, value in (deployments or {}).items()})
    return table


def price_for(prices: Mapping[str, Price], provider: str, model: str) -> Price:
    """The price of `provider:model`; a model without one is a configuration error, not free."""
    price = prices.get(f"{provider}:{model}")
    if price is None:
        raise ConfigError("prices", f"no price for {provider}:{model}; every called model needs one")
    return price
