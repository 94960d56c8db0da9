"""`POST /v1/chat/completions`: one prompt job through the whole pipeline, answered when judged."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from tierflow.api.auth import ApiError, caller_tenant
from tierflow.api.shapes import chat_completion, job_error, model_tier, prompt_of
from tierflow.client import Client
from tierflow.routing.states import HELD
from tierflow.store.api_batches import job_outcomes
from tierflow.store.db import transaction

HELD_STATES = frozenset(state.value for state in HELD)  # no answer, but nothing went wrong

router = APIRouter(prefix="/v1", tags=["openai"])
Tenant = Annotated[str | None, Depends(caller_tenant)]


class ChatRequest(BaseModel):
    """OpenAI's chat-completion request; fields tierflow does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]]
    stream: bool | None = None


@router.post(
    "/chat/completions",
    summary="One prompt, routed (tierflow/auto) or pinned (tierflow/small ...), judged, answered",
)
def chat_completions(request: Request, tenant: Tenant, body: ChatRequest) -> dict[str, Any]:
    client: Client = request.app.state.client
    ladder = tuple(tier.value for tier in client.settings.ladder)
    try:
        prompt = prompt_of(body.model_dump())
        tier = model_tier(body.model_dump(), ladder)
    except ValueError as exc:
        param, _, message = str(exc).partition(": ")
        raise ApiError(
            400, message, "unsupported" if "stream" in param else "invalid_request", param
        ) from None
    job_id = f"chat-{uuid.uuid4().hex}"
    metadata: dict[str, Any] = {"tenant": tenant} if tenant is not None else {}
    if tier is not None:
        metadata["tier"] = tier
    kind, payload = client.runtime.kinds.chat_job(prompt)
    job = {"id": job_id, "kind": kind, "payload": payload, "metadata": metadata}
    batch = client.submit([job], source="chat")
    timeout = client.settings.api_chat_timeout_s
    try:
        batch.wait(timeout=timeout)
    except TimeoutError:
        message = f"no verdict after {timeout:.0f}s; the job goes on (GET /v1/tierflow/jobs/{job_id})"
        raise ApiError(504, message, "timeout", job_id=job_id) from None
    with transaction(client.runtime.sessions) as session:
        outcome = job_outcomes(session, [job_id])[job_id]
    if outcome.state != "succeeded":
        error = job_error(outcome)
        raise ApiError(
            422 if outcome.state in HELD_STATES else 502, error["message"], error["code"], job_id=job_id
        )
    return chat_completion(outcome, int(time.time()))
