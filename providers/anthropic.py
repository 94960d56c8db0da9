"""The Provider for the Anthropic Messages API.

Owns one `anthropic.Anthropic` sync client per adapter (base_url settable, e.g.
the local provider server), the request it sends, the reading of text and usage
from the response, cost from `providers.pricing`, and the translation of SDK
exceptions into ProviderErrors. The 2.x SDK has no sampling temperature, so
`CompletionRequest.temperature` is not sent. It never retries (`max_retries=0`): retries,
breakers and fallbacks belong to the resilience layer.

The SDK is the transport (connection pool, auth and version headers, timeouts, typed
errors): the request goes through the client's own `post`, which skips the resource
method's transformation of the parameters (built here as plain JSON already), and a 2xx
body is decoded once as JSON and read as plain data, not built into the SDK's pydantic
models: the adapter checks every field it reads anyway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import anthropic
import httpx2
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

INPUT_TOKEN_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class AnthropicProvider:
    """A Provider over the Anthropic Messages API.

    Args:
        api_key: the key; kept out of reprs and error reasons.
        prices: price per "provider:model" reference, as `providers.pricing.price_table` gives.
        base_url: root of the API (e.g. "http://127.0.0.1:8765"); None for api.anthropic.com.
        name: the provider name in model references and prices.
        connect_timeout_s: the client's default timeout; each call uses its request's timeout_s.
        structured_outputs: send a request's json_schema as `output_config.format`; turn off
            for models without structured outputs (the schema then only shapes the prompt).
    """

    def __init__(
        self,
        *,
        api_key: str | SecretStr,
        prices: Mapping[str, Price],
        base_url: str | None = None,
        name: str = "anthropic",
        connect_timeout_s: float = 10.0,
        structured_outputs: bool = True,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self.name = name
        self._secrets = (key,)
        self._prices = prices
        self._base_url = base_url
        self._structured_outputs = structured_outputs
        self._client = anthropic.Anthropic(
            api_key=key,
            base_url=base_url,
            timeout=connect_timeout_s,
            max_retries=0,
            http_client=http_client(base_url, connect_timeout_s),
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r}, base_url={self._base_url!r})"

    def close(self) -> None:
        self._client.close()

    def complete(self, model: str, request: CompletionRequest) -> Completion:
        price = price_for(self._prices, self.name, model)
        started = time.perf_counter()
        try:
            response = self._client.post(
                "/v1/messages",
                body=self._params(model, request),
                cast_to=httpx2.Response,
                options={"timeout": request.timeout_s},
            )
            message = json.loads(response.content)
        except anthropic.APIError as exc:
            raise self._error(model, exc) from exc
        except ValueError as exc:  # a 2xx body that is not JSON
            raise ProviderUnavailable(self.name, model, f"{MALFORMED}: not JSON") from exc
        latency_s = time.perf_counter() - started
        text, input_tokens, output_tokens = self._read(model, message)
        read, written = _cache_tokens(field(message, "usage"))
        return Completion(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=price.cost(input_tokens, output_tokens, read, written),
            cached_input_tokens=read,
            cache_write_tokens=written,
            latency_s=latency_s,
            provider=self.name,
            model=model,
            request_id=response.headers.get("request-id") or _string(field(message, "id")),
            parsed=json_object(text) if request.json_schema is not None else None,
        )

    def _params(self, model: str, request: CompletionRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": "user", "content": request.user}],
        }
        if request.system:
            params["system"] = request.system
        if request.json_schema is not None and self._structured_outputs:
            params["output_config"] = {"format": {"type": "json_schema", "schema": request.json_schema}}
        return params

    def _read(self, model: str, message: object) -> tuple[str, int, int]:
        """(text, input tokens, output tokens) of a decoded response, or the error it amounts to."""
        blocks = field(message, "content")
        usage = field(message, "usage")
        input_tokens, output_tokens = _input_tokens(usage), count(usage, "output_tokens")
        if not isinstance(blocks, list) or input_tokens is None or output_tokens is None:
            raise ProviderUnavailable(self.name, model, f"{MALFORMED}: no content or no usage")
        if field(message, "stop_reason") == "refusal":
            raise ProviderRejected(self.name, model, "refused")
        texts = [text for text in (field(block, "text") for block in blocks) if isinstance(text, str)]
        if not texts:
            raise ProviderUnavailable(self.name, model, f"{MALFORMED}: no text content")
        return "".join(texts), input_tokens, output_tokens

    def _error(self, model: str, exc: anthropic.APIError) -> ProviderError:
        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderTimeout(self.name, model, "request timed out")
        if isinstance(exc, anthropic.APIConnectionError):
            return ProviderUnavailable(self.name, model, "connection failed")
        if isinstance(exc, anthropic.APIStatusError):
            detail = exc.api_message if isinstance(exc.api_message, str) else exc.message
            if exc.type:
                detail = f"{exc.type}: {detail}"
            return error_for_status(
                self.name, model, exc.status_code, exc.response.headers, redact(detail, self._secrets)
            )
        return ProviderUnavailable(self.name, model, f"{MALFORMED}: {redact(exc.message, self._secrets)}")


def _input_tokens(usage: object) -> int | None:
    """All input tokens billed: uncached plus those written to and read from the prompt cache
    (each priced at its own rate: `_cache_tokens`)."""
    counts = [count(usage, name) for name in INPUT_TOKEN_FIELDS]
    if counts[0] is None:
        return None
    return sum(n for n in counts if n is not None)


def _cache_tokens(usage: object) -> tuple[int, int]:
    """(cache_read_input_tokens, cache_creation_input_tokens), 0 where the usage has none."""
    return count(usage, "cache_read_input_tokens") or 0, count(usage, "cache_creation_input_tokens") or 0


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""
