"""What the provider server tests share: the key, the recorded answers, prices and helpers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tierflow.providers.anthropic import AnthropicProvider
from tierflow.providers.openai import OpenAIProvider
from tierflow.providers.pricing import Price
from tierflow.providers.server import ProviderServer
from tierflow.providers.tokens import count_tokens

API_KEY = "sk-tierflow-test-7Qm2Zr9LwX4c"
STRONG_RECORDED = "acme/strong-recorded-v1"
WEAK_RECORDED = "acme/weak-recorded-v1"
REPLAY_PROMPT = "A kettle holds 1.7 litres and a cup takes 0.25 litres. How many full cups can it pour?"
STRONG_RESPONSE = "Six full cups: 6 x 0.25 = 1.5 litres, and 0.2 litres are left over.\n#### 6"
WEAK_RESPONSE = "1.7 / 0.25 = 6.8, so 7 cups.\n#### 7"
UNRECORDED_PROMPT = "Which planet in the made-up Vexa system has the shortest year?"
SYSTEM = "You answer questions.\nTask: answer"
USER = "What is 12 * 7?"

PRICES = {
    "openai:gpt-4o": Price(2.50, 10.00),
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "anthropic:claude-sonnet-4-6": Price(3.00, 15.00),
    "anthropic:claude-haiku-4-5": Price(1.00, 5.00),
}


@dataclass
class Adapter:
    provider: OpenAIProvider | AnthropicProvider
    weak: str
    strong: str

    def price(self, model: str) -> Price:
        return PRICES[f"{self.provider.name}:{model}"]

    def prompt_tokens(self, system: str, user: str) -> int:
        return count_tokens(system) + count_tokens(user)


def control(server: ProviderServer, path: str, body: object | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.base_url + path, data=data, method="GET" if data is None else "POST"
    )
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text
