"""The Provider for OpenAI Chat Completions and OpenAI-compatible servers.

Owns one `openai.OpenAI` sync client per adapter (base_url settable: OpenAI,
vLLM, Ollama, the local provider server), the request it sends, the reading of
text and usage from the response, cost from `providers.pricing`, and the
translation of SDK exceptions into ProviderErrors. It never retries
(`max_retries=0`): retries, breakers and fallbacks belong to the resilience layer.

The SDK is the transport (connection pool, auth headers, timeouts, typed errors): the
request goes through the client's own `post`, which skips the resource method's
transformation of the parameters (the adapter builds them as plain JSON already), and
a 2xx body is decoded once as JSON and read as plain data instead of the SDK's pydantic
models. Both cost more client CPU per call than the rest of the call; the adapter checks
every field it reads anyway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx2
import openai
from pydantic import SecretStr

from tierflow.providers.base import Completion, CompletionRequest, count, field, json_object
from tierflow.providers.failures import MALFORMED, error_for_status, redact
from tierflow.providers.pricing import Price, price_for
from tierflow.providers.transport import http_client
from tierflow.routing.errors import (
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

MaxTokensField = Literal["max_completion_tokens", "max_tokens"]


class OpenAIProvider:
    """A Provider over the OpenAI Chat Completions API.

    Args:
        api_key: the key; kept out of reprs and error reasons.
        prices: price per "provider:model" reference, as `providers.pricing.price_table` gives.
        base_url: root of an OpenAI-compatible API (e.g. "http://127.0.0.1:8765/v1");
            None for api.openai.com.
        name: the provider name in model references and prices ("openai", "vllm", "local").
        connect_timeout_s: the client's default timeout; each call uses its request's timeout_s.
        max_tokens_field: how the server wants the output limit named; older
            OpenAI-compatible servers know only "max_tokens".
    """

    def __init__(
        self,
        *,
        api_key: str | SecretStr,
        prices: Mapping[str, Price],
        base_url: str | None = None,
        name: str = "openai",
        connect_timeout_s: float = 10.0,
        max_tokens_field: MaxTokensField = "max_completion_tokens",
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self.name = name
        self._secrets = (key,)
        self._prices = prices
        self._base_url = base_url
        self._max_tokens_field = max_tokens_field
        self._client = openai.OpenAI(
            api_key=key,
            base_url=base_url,
            timeout=connect_timeout_s,
            max_retries=0,
            http_client=http_client(base_url, connect_timeout_s),
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, base_url={self._base_url!r})"

    def close(self) -> None:
        self._client.close()

    def complete(self, model: str, request: CompletionRequest) -> Completion:
        price = price_for(self._prices, self.name, model)
        started = time.perf_counter()
        try:
            response = self._client.post(
                "/chat/completions",
                body=self._params(model, request),
                cast_to=httpx2.Response,
                options={"timeout": request.timeout_s},
            )
            completion = json.loads(response.content)
        except openai.APIError as exc:
            raise self._error(model, exc) from exc
        except ValueError as exc:  # a 2xx body that is not JSON
            raise ProviderUnavailable(self.name, model, f"{MALFORMED}: not JSON") from exc
        latency_s = time.perf_counter() - started
        text, input_tokens, output_tokens = self._read(model, completion)
        cached = _cached_tokens(completion, input_tokens)
        return Completion(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=price.cost(input_tokens, output_tokens, cached),
            cached_input_tokens=cached,
            latency_s=latency_s,
            provider=self.name,
            model=model,
            request_id=response.headers.get("x-request-id") or _string(field(completion, "id")),
            parsed=json_object(text) if request.json_schema is not None else None,
        )

    def _params(self, model: str, request: CompletionRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": request.user})
        params: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": request.temperature,
            self._max_tokens_field: request.max_tokens,
        }
        if request.json_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "tierflow_output", "schema": request.json_schema},
            }
        return params

    def _read(self, model: str, completion: object) -> tuple[str, int, int]:
        """(text, input tokens, output tokens) of a decoded response, or the error it amounts to."""
        choices = field(completion, "choices")
        message = field(choices[0], "message") if isinstance(choices, list) and choices else None
        usage = field(completion, "usage")
        input_tokens, output_tokens = count(usage, "prompt_tokens"), count(usage, "completion_tokens")
        if not isinstance(message, dict) or input_tokens is None or output_tokens is None:
            raise ProviderUnavailable(self.name, model, f"{MALFORMED}: no choices or no usage")
        content, refusal = message.get("content"), message.get("refusal")
        if content is None and isinstance(refusal, str) and refusal:
            raise ProviderRejected(self.name, model, f"refused: {redact(refusal, self._secrets)}")
        if not isinstance(content, str):
            raise ProviderUnavailable(self.name, model, f"{MALFORMED}: no message content")
        return content, input_tokens, output_tokens

    def _error(self, model: str, exc: openai.APIError) -> ProviderError:
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(self.name, model, "request timed out")
        if isinstance(exc, openai.APIConnectionError):
            return ProviderUnavailable(self.name, model, "connection failed")
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            detail = body.get("message") if isinstance(body.get("message"), str) else exc.message
            return error_for_status(
                self.name, model, exc.status_code, exc.response.headers, redact(str(detail), self._secrets)
            )
        return ProviderUnavailable(self.name, model, f"{MALFORMED}: {redact(exc.message, self._secrets)}")


def _cached_tokens(completion: object, input_tokens: int) -> int:
    """usage.prompt_tokens_details.cached_tokens: of the prompt tokens, those read from the cache."""
    cached = count(field(field(completion, "usage"), "prompt_tokens_details"), "cached_tokens")
    return min(cached, input_tokens) if cached else 0


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""
