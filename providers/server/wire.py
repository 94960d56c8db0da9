"""What both wire protocols of the local provider server share.

Owns the protocol-neutral view of a chat call (`ChatCall`), of its reply
(`Reply`, with usage and truncation at max_tokens), the prompt cache's usage, the error kinds the server
answers with, and the `Wire` protocol that the OpenAI and Anthropic modules
implement. Knows nothing of sockets or handlers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from tierflow.providers.tokens import count_tokens, first_tokens


class ErrorKind(StrEnum):
    """Why the server refused a request, before each protocol names it its own way."""

    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    NOT_FOUND = "not_found"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    NOT_IMPLEMENTED = "not_implemented"


STATUS = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.RATE_LIMIT: 429,
    ErrorKind.SERVER_ERROR: 500,
    ErrorKind.NOT_IMPLEMENTED: 501,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 504,
}


class WireError(Exception):
    """A request the server answers with an error in the caller's protocol."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def status(self) -> int:
        return STATUS[self.kind]


@dataclass(frozen=True)
class ChatCall:
    """One chat request in either protocol: the model, its system text and the last user message."""

    model: str
    system: str
    user: str
    prompt_tokens: int
    max_tokens: int | None


@dataclass(frozen=True)
class Reply:
    """The answer as sent: cut at max_tokens, with its usage."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    truncated: bool
    # Of prompt_tokens: those read from, and those written to, the prompt cache (PromptCache).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class PromptCache:
    """A deterministic prompt cache: a call's system text is the cached prefix. The first call
    with a (model, system text) writes it, every later one reads it; an empty system caches nothing.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def usage(self, call: ChatCall, reply: Reply) -> Reply:
        """`reply` with the tokens it read from or wrote to the cache."""
        if not call.system:
            return reply
        tokens = min(text_tokens(call.system), reply.prompt_tokens)
        with self._lock:
            seen = (call.model, call.system) in self._seen
            self._seen.add((call.model, call.system))
        if seen:
            return replace(reply, cache_read_tokens=tokens)
        return replace(reply, cache_write_tokens=tokens)


def text_tokens(text: str) -> int:
    """Tokens of a text as usage counts them: cl100k_base, a fair proxy for every served model."""
    return count_tokens(text)


def reply_to(call: ChatCall, text: str) -> Reply:
    """The reply to `call` with answer `text`, cut as a model stops at its max_tokens."""
    tokens = text_tokens(text)
    if call.max_tokens is not None and tokens > call.max_tokens:
        # a model that stops at max_tokens has generated exactly that many tokens
        cut = first_tokens(text, call.max_tokens)
        return Reply(cut, call.prompt_tokens, call.max_tokens, truncated=True)
    return Reply(text, call.prompt_tokens, tokens, truncated=False)


def content_text(content: object, where: str) -> str:
    """The text of a message content: a string, or a list of text parts (other parts are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
            if not isinstance(text, str):
                raise WireError(ErrorKind.INVALID_REQUEST, f"{where}: only text content parts are supported")
            texts.append(text)
        return "\n".join(texts)
    raise WireError(ErrorKind.INVALID_REQUEST, f"{where}: content must be a string or a list of text parts")


def positive_int(body: Mapping[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WireError(ErrorKind.INVALID_REQUEST, f"{field} must be a positive integer")
    return value


def required_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError(ErrorKind.INVALID_REQUEST, "model is required")
    return model


def refuse_streaming(body: Mapping[str, Any]) -> None:
    if body.get("stream"):
        raise WireError(ErrorKind.INVALID_REQUEST, "stream=true is not supported by the local server")


class Wire(Protocol):
    """One HTTP protocol (OpenAI Chat Completions or Anthropic Messages) as the handler needs it."""

    name: str
    request_id_header: str

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        """The API key a request carries; `headers` has lower-case names."""
        ...

    def parse_chat(self, body: object) -> ChatCall: ...

    def chat_body(self, call: ChatCall, reply: Reply, request_id: str) -> dict[str, Any]: ...

    def invalid_shape_body(self, call: ChatCall, request_id: str) -> dict[str, Any]: ...

    def error_body(self, kind: ErrorKind, message: str, request_id: str) -> dict[str, Any]: ...

    def models_body(self, models: list[str]) -> dict[str, Any]: ...
