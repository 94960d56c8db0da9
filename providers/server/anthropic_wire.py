"""The Anthropic Messages protocol, as far as the local provider server speaks it.

Owns parsing `POST /v1/messages` bodies (system as a string or text blocks,
messages, max_tokens) and the JSON of messages with usage, model lists and
`{"type": "error", "error": {...}}` bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierflow.providers.server.wire import (
    ChatCall,
    ErrorKind,
    Reply,
    WireError,
    content_text,
    positive_int,
    refuse_streaming,
    required_model,
    text_tokens,
)

ROLES = {"user", "assistant"}

ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.RATE_LIMIT: "rate_limit_error",
    ErrorKind.SERVER_ERROR: "api_error",
    ErrorKind.UNAVAILABLE: "overloaded_error",
    ErrorKind.TIMEOUT: "timeout_error",
    ErrorKind.NOT_IMPLEMENTED: "invalid_request_error",
}


class AnthropicWire:
    name = "anthropic"
    request_id_header = "request-id"

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        if headers.get("x-api-key"):
            return headers["x-api-key"]
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    def parse_chat(self, body: object) -> ChatCall:
        if not isinstance(body, dict):
            raise WireError(ErrorKind.INVALID_REQUEST, "the request body must be a JSON object")
        model = required_model(body)
        refuse_streaming(body)
        max_tokens = positive_int(body, "max_tokens")
        if max_tokens is None:
            raise WireError(ErrorKind.INVALID_REQUEST, "max_tokens: Field required")
        system = "" if body.get("system") is None else content_text(body["system"], "system")
        user, message_tokens = _read_messages(body.get("messages"))
        return ChatCall(model, system, user, text_tokens(system) + message_tokens, max_tokens)

    def chat_body(self, call: ChatCall, reply: Reply, request_id: str) -> dict[str, Any]:
        return {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": "max_tokens" if reply.truncated else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.prompt_tokens - reply.cache_read_tokens - reply.cache_write_tokens,
                "output_tokens": reply.completion_tokens,
                "cache_creation_input_tokens": reply.cache_write_tokens,
                "cache_read_input_tokens": reply.cache_read_tokens,
            },
        }

    def invalid_shape_body(self, call: ChatCall, request_id: str) -> dict[str, Any]:
        return {"id": f"msg_{request_id}", "type": "message", "model": call.model}

    def error_body(self, kind: ErrorKind, message: str, request_id: str) -> dict[str, Any]:
        error = {"type": ERROR_TYPES[kind], "message": message}
        return {"type": "error", "error": error, "request_id": request_id}

    def models_body(self, models: list[str]) -> dict[str, Any]:
        created = "2025-01-01T00:00:00Z"
        data = [{"type": "model", "id": m, "display_name": m, "created_at": created} for m in models]
        return {
            "data": data,
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }


def _read_messages(messages: object) -> tuple[str, int]:
    """(last user message, tokens of all messages) of a messages list."""
    if not isinstance(messages, list) or not messages:
        raise WireError(ErrorKind.INVALID_REQUEST, "messages must be a non-empty list")
    user: str | None = None
    tokens = 0
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            reason = f"messages.{index}.role must be one of {sorted(ROLES)}"
            raise WireError(ErrorKind.INVALID_REQUEST, reason)
        text = content_text(message.get("content"), f"messages.{index}")
        tokens += text_tokens(text)
        if role == "user":
            user = text
    if user is None:
        raise WireError(ErrorKind.INVALID_REQUEST, "messages must contain a user message")
    return user, tokens
