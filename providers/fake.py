"""An in-package provider with deterministic answers, for the demo and the tests.

It plays three models, `fake-small`, `fake-medium` and `fake-large`, that differ in
strength, latency and price, and can be told to fail (to exercise escalation).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping

from tierflow.providers import rules
from tierflow.providers.base import Completion, CompletionRequest
from tierflow.providers.pricing import Price, price_for
from tierflow.routing.errors import ProviderRejected, ProviderUnavailable
from tierflow.routing.kinds.registry import KindRegistry

STRENGTH = {"fake-small": 0.55, "fake-medium": 0.8, "fake-large": 0.97}
LATENCY_S = {"fake-small": 0.02, "fake-medium": 0.06, "fake-large": 0.15}


def count_tokens(text: str) -> int:
    """The fake's usage: about four characters a token, as a tokenizer would give."""
    return max(1, (len(text) + 3) // 4)


class FakeProvider:
    name = "fake"

    def __init__(
        self,
        prices: Mapping[str, Price],
        latency_scale: float = 1.0,
        failing_models: Collection[str] = (),
        kinds: KindRegistry | None = None,
    ) -> None:
        self._prices = prices
        self._kinds = kinds  # whose plug-in experts it answers offline; None: the built-ins
        self._latency_scale = latency_scale
        self._failing = frozenset(failing_models)

    def complete(self, model: str, request: CompletionRequest) -> Completion:
        if model not in STRENGTH:
            raise ProviderRejected(self.name, model, "unknown model")
        started = time.perf_counter()
        if f"{self.name}:{model}" in self._failing:
            raise ProviderUnavailable(self.name, model, "injected failure")
        text = rules.answer(request.system, request.user, STRENGTH[model], self._kinds)
        time.sleep(LATENCY_S[model] * self._latency_scale)
        input_tokens = count_tokens(request.system) + count_tokens(request.user)
        output_tokens = count_tokens(text)
        price = price_for(self._prices, self.name, model)
        return Completion(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=price.cost(input_tokens, output_tokens),
            latency_s=time.perf_counter() - started,
            provider=self.name,
            model=model,
            request_id=f"fake-{uuid.uuid4().hex[:12]}",
        )
