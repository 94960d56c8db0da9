"""Prices per million tokens, the cost of a call from its usage, and the lookup every provider uses.

The defaults are public list prices (USD per million input / output tokens); settings
override or extend them (`prices = {"openai:gpt-4o-mini" = [0.15, 0.60]}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tierflow.routing.errors import ConfigError


@dataclass(frozen=True)
class Price:
    input_per_million: float
    output_per_million: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6


DEFAULT_PRICES: dict[str, Price] = {
    "fake:fake-small": Price(0.15, 0.60),
    "fake:fake-medium": Price(1.00, 4.00),
    "fake:fake-large": Price(5.00, 15.00),
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "openai:gpt-4o": Price(2.50, 10.00),
    "openai:gpt-4-1106-preview": Price(10.00, 30.00),
    "openai:mistralai/Mixtral-8x7B-Instruct-v0.1": Price(0.60, 0.60),
    "anthropic:claude-haiku-4-5": Price(1.00, 5.00),
    "anthropic:claude-sonnet-4-5": Price(3.00, 15.00),
}


def price_table(overrides: dict[str, tuple[float, float]]) -> dict[str, Price]:
    table = dict(DEFAULT_PRICES)
    table.update({ref: Price(*pair) for ref, pair in overrides.items()})
    return table


def price_for(prices: Mapping[str, Price], provider: str, model: str) -> Price:
    """The price of `provider:model`; a model without one is a configuration error, not free."""
    price = prices.get(f"{provider}:{model}")
    if price is None:
        raise ConfigError("prices", f"no price for {provider}:{model}; every called model needs one")
    return price
