"""The OpenAI Chat Completions protocol, as far as the local provider server speaks it.

Owns parsing `POST /v1/chat/completions` bodies (system/developer and user
messages, max_tokens or max_completion_tokens, temperature, response_format) and
the JSON of completions, model lists and `{"error": {...}}` bodies.
"""

from __future__ import annotations

import time
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

SYSTEM_ROLES = {"system", "developer"}
ROLES = SYSTEM_ROLES | {"user", "assistant", "tool"}
OWNER = "tierflow-local"
RESPONSE_FORMATS = {"text", "json_object", "json_schema"}

ERROR_TYPES: dict[ErrorKind, tuple[str, str | None]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", None),
    ErrorKind.AUTHENTICATION: ("invalid_request_error", "invalid_api_key"),
    ErrorKind.NOT_FOUND: ("invalid_request_error", "model_not_found"),
    ErrorKind.RATE_LIMIT: ("requests", "rate_limit_exceeded"),
    ErrorKind.SERVER_ERROR: ("server_error", None),
    ErrorKind.UNAVAILABLE: ("server_error", "service_unavailable"),
    ErrorKind.TIMEOUT: ("server_error", "timeout"),
    ErrorKind.NOT_IMPLEMENTED: ("invalid_request_error", "not_implemented"),
}


class OpenAIWire:
    name = "openai"
    request_id_header = "x-request-id"

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    def parse_chat(self, body: object) -> ChatCall:
        if not isinstance(body, dict):
            raise WireError(ErrorKind.INVALID_REQUEST, "the request body must be a JSON object")
        model = required_model(body)
        refuse_streaming(body)
        if body.get("n", 1) != 1:
            raise WireError(ErrorKind.INVALID_REQUEST, "only n=1 is supported")
        _check_temperature(body.get("temperature"))
        _check_response_format(body.get("response_format"))
        max_tokens = positive_int(body, "max_completion_tokens") or positive_int(body, "max_tokens")
        system, user, prompt_tokens = _read_messages(body.get("messages"))
        return ChatCall(model, system, user, prompt_tokens, max_tokens)

    def chat_body(self, call: ChatCall, reply: Reply, request_id: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": "tierflow-local",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None},
                    "finish_reason": "length" if reply.truncated else "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.total_tokens,
                "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens},
            },
        }

    def invalid_shape_body(self, call: ChatCall, request_id: str) -> dict[str, Any]:
        return {"id": f"chatcmpl-{request_id}", "object": "chat.completion", "model": call.model}

    def error_body(self, kind: ErrorKind, message: str, request_id: str) -> dict[str, Any]:
        error_type, code = ERROR_TYPES[kind]
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}

    def models_body(self, models: list[str]) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": OWNER} for m in models],
        }


def _check_temperature(value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise WireError(ErrorKind.INVALID_REQUEST, "temperature must be a number between 0 and 2")


def _check_response_format(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMATS:
        reason = f"response_format.type must be one of {sorted(RESPONSE_FORMATS)}"
        raise WireError(ErrorKind.INVALID_REQUEST, reason)
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
        raise WireError(ErrorKind.INVALID_REQUEST, "response_format json_schema needs a json_schema object")


def _read_messages(messages: object) -> tuple[str, str, int]:
    """(system text, last user message, prompt tokens) of a messages list."""
    if not isinstance(messages, list) or not messages:
        raise WireError(ErrorKind.INVALID_REQUEST, "messages must be a non-empty list")
    system: list[str] = []
    user: str | None = None
    prompt_tokens = 0
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            reason = f"messages[{index}].role must be one of {sorted(ROLES)}"
            raise WireError(ErrorKind.INVALID_REQUEST, reason)
        content = message.get("content")
        # an assistant turn that only called tools has no content
        text = "" if content is None and role != "user" else content_text(content, f"messages[{index}]")
        prompt_tokens += text_tokens(text)
        if role in SYSTEM_ROLES:
            system.append(text)
        elif role == "user":
            user = text
    if user is None:
        raise WireError(ErrorKind.INVALID_REQUEST, "messages must contain a user message")
    return "\n".join(system), user, prompt_tokens
