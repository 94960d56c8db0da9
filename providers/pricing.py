"""Prices per million tokens and the cost of a call from its usage."""

from __future__ import annotations

from dataclasses import dataclass


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
}


def price_table(overrides: dict[str, tuple[float, float]]) -> dict[str, Price]:
    table = dict(DEFAULT_PRICES)
    table.update({ref: Price(*pair) for ref, pair in overrides.items()})
    return table
