"""OpenAI's wire shapes: batch input lines in, file, batch, chat-completion and output lines out.

Pure functions of plain data and store rows; they decide nothing about routing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tierflow.routing.kinds.registry import KindRegistry, builtin_registry, recorded_prompt_kind
from tierflow.routing.states import Tier
from tierflow.store.api_batches import Outcome
from tierflow.store.models import ApiBatch, ApiFile

CHAT_URL = "/v1/chat/completions"
AUTO_MODELS = frozenset({"tierflow/auto", "auto"})
TIERS = tuple(tier.value for tier in Tier)


@dataclass(frozen=True)
class LineError:
    line: int
    param: str
    message: str
    code: str = "invalid_request"

    def as_openai(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


def unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                raise ValueError(f"{where}: only text parts are accepted")
            parts.append(part["text"])
        return "\n".join(parts)
    raise ValueError(f"{where}: a string or a list of text parts is required")


def prompt_of(body: Any) -> str:
    """The chat request's messages as one prompt; ValueError naming what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("body: a JSON object is required")
    if body.get("stream"):
        raise ValueError("body.stream: streaming is not supported; tierflow answers once the job is judged")
    model_tier(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("body.messages: a non-empty list of messages is required")
    texts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"body.messages.{i}: an object with a role is required")
        text = _content_text(message.get("content"), f"body.messages.{i}.content")
        texts.append(text if len(messages) == 1 else f"{message['role']}: {text}")
    prompt = "\n\n".join(texts)
    if not prompt.strip():
        raise ValueError("body.messages: the messages hold no text")
    return prompt


def model_tier(body: dict[str, Any], ladder: tuple[str, ...] = TIERS) -> str | None:
    """The tier a request's `model` pins the job to, None for tierflow/auto; ValueError naming it.

    `tierflow/small` (or the bare `small`) runs the job on that tier only: it is not routed,
    and when its checks fail it is held for review, never escalated past the pin.
    """
    model = body.get("model")
    if model in AUTO_MODELS:
        return None
    tier = model.removeprefix("tierflow/") if isinstance(model, str) else None
    if tier not in TIERS:
        served = ", ".join(["tierflow/auto", *(f"tierflow/{t}" for t in ladder)])
        raise ValueError(f"body.model: {model!r} is not served; use one of {served}")
    if tier not in ladder:
        raise ValueError(f"body.model: tier {tier} is not on this deployment's ladder ({', '.join(ladder)})")
    return tier


def line_job(
    raw: Any,
    job_id: str,
    tenant: str | None,
    kinds: KindRegistry | None = None,
    ladder: tuple[str, ...] = TIERS,
) -> tuple[str, dict[str, Any]]:
    """One Batch API input line as (custom_id, JobSpec dict); ValueError('param: reason').

    The job is of the kind its `metadata.kind` names (one of `kinds`, the built-ins when None,
    that takes chat messages), else of the recorded-prompt kind; its `body.model` may pin a tier."""
    if not isinstance(raw, dict):
        raise ValueError("<line>: a JSON object is required")
    custom_id = raw.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
        raise ValueError("custom_id: a non-empty string of at most 512 characters is required")
    if raw.get("method", "POST") != "POST":
        raise ValueError("method: only POST is accepted")
    if raw.get("url") != CHAT_URL:
        raise ValueError(f"url: only {CHAT_URL} is served, not {raw.get('url')!r}")
    meta = raw.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata.kind: metadata must be an object")
    registry = kinds or builtin_registry()
    fields = registry.chat_fields()
    kind = meta.get("kind", recorded_prompt_kind().name)
    if kind not in fields:
        raise ValueError(f"metadata.kind: {kind!r} is not a kind ({', '.join(fields)})")
    payload = {fields[kind]: prompt_of(raw.get("body"))}
    metadata: dict[str, Any] = {"tenant": tenant} if tenant is not None else {}
    tier = model_tier(raw["body"], ladder)
    if tier is not None:
        metadata["tier"] = tier
    return custom_id, {"id": job_id, "kind": kind, "payload": payload, "metadata": metadata}


def file_object(row: ApiFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": unix(row.created_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
    }


def batch_object(row: ApiBatch, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": row.errors,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": unix(row.created_at),
        "in_progress_at": unix(row.in_progress_at),
        "expires_at": None,
        "finalizing_at": unix(row.finalizing_at),
        "completed_at": unix(row.completed_at),
        "failed_at": unix(row.failed_at),
        "expired_at": None,
        "cancelling_at": unix(row.cancelling_at),
        "cancelled_at": unix(row.cancelled_at),
        "request_counts": counts,
        "metadata": row.meta,
    }


def answer_of(output: dict[str, Any] | None, kinds: KindRegistry | None = None) -> str:
    """The text of a job's accepted output: its kind's answer field (any of `kinds`, the built-ins
    when None), else the output as JSON."""
    if output is None:
        return ""
    for key in (kinds or builtin_registry()).answer_fields():
        if isinstance(output.get(key), str):
            return str(output[key])
    return json.dumps(output, sort_keys=True, default=str)


def served_model(outcome: Outcome) -> str:
    """`tierflow/<tier>:<model>`: the tier that gave the accepted answer and its model."""
    return f"tierflow/{outcome.tier or 'none'}:{outcome.model or 'rules'}"


def chat_completion(outcome: Outcome, created: int) -> dict[str, Any]:
    """The job's accepted answer as a chat completion; usage and cost cover every attempt."""
    return {
        "id": f"chatcmpl-{outcome.job_id}",
        "object": "chat.completion",
        "created": created,
        "model": served_model(outcome),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_of(outcome.output), "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": outcome.input_tokens,
            "completion_tokens": outcome.output_tokens,
            "total_tokens": outcome.input_tokens + outcome.output_tokens,
        },
        "tierflow": {
            "job_id": outcome.job_id,
            "cost_usd": round(outcome.cost_usd, 10),
            "tier_path": outcome.tier_path,
            "verdict": outcome.verdict,
            "quality": outcome.quality,
        },
    }


def job_error(outcome: Outcome) -> dict[str, str]:
    """Why a job gave no accepted answer, as an OpenAI error object."""
    if outcome.state == "needs_review":
        return {"code": "needs_review", "message": "the answer is held for a person (tierflow review)"}
    if outcome.state == "needs_clarification":  # the message is the question for the customer
        question = (outcome.output or {}).get("question")
        return {"code": "needs_clarification", "message": str(question or "the job needs clarification")}
    if outcome.error == "cancelled":
        return {"code": "batch_cancelled", "message": "the batch was cancelled before this request ran"}
    return {"code": "job_failed", "message": outcome.error or f"the job ended {outcome.state}"}


def output_line(outcome: Outcome, created: int) -> dict[str, Any]:
    """One line of a batch's output file (an accepted answer) or error file (anything else)."""
    line: dict[str, Any] = {"id": f"batch_req_{outcome.job_id[-24:]}", "custom_id": outcome.custom_id}
    if outcome.state == "succeeded":
        body = chat_completion(outcome, created)
        line["response"] = {"status_code": 200, "request_id": outcome.job_id, "body": body}
        line["error"] = None
    else:
        line["response"] = None
        line["error"] = job_error(outcome)
    return line
