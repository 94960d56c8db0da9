"""The FastAPI application of `tierflow serve`, built around one `Client`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tierflow import __version__
from tierflow.api import metrics, routes_chat, routes_native, routes_openai
from tierflow.api.auth import ApiError
from tierflow.api.batches import BatchRunner
from tierflow.api.limits import BodyLimit
from tierflow.client import Client
from tierflow.routing.errors import ServiceUnavailable
from tierflow.worker.metrics import metrics_registry

DESCRIPTION = (
    "tierflow's HTTP API. `/v1/files`, `/v1/batches` and `/v1/chat/completions` follow OpenAI's "
    "shapes, so the official SDKs work with `base_url` set here (model `tierflow/auto`, or "
    "`tierflow/small|medium|large` to pin a job to a tier: held for review, never escalated, "
    "when its checks fail); "
    "`/v1/tierflow/...` are tierflow's own. Send `Authorization: Bearer <key>` once keys exist."
)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(part) for part in first["loc"] if part != "body") or None
    return JSONResponse(ApiError(400, str(first["msg"]), "invalid_request", param).body(), status_code=400)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(ApiError(503, str(exc), "service_unavailable").body(), status_code=503)


def _routes() -> FastAPI:
    api = FastAPI(title="tierflow", version=__version__, description=DESCRIPTION)
    api.include_router(routes_openai.router)
    api.include_router(routes_chat.router)
    api.include_router(routes_native.router)
    api.include_router(metrics.router)
    return api


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document (docs/openapi.json is this, committed; a test compares them)."""
    document: dict[str, Any] = _routes().openapi()
    return document


def create_api(client: Client, require_keys: bool = False) -> FastAPI:
    """The API on `client`'s settings, store and broker (the client is the caller's to start and close).

    `require_keys`: refuse every request without a valid key, even while no key exists.
    """
    api = _routes()
    api.state.client = client
    api.state.require_keys = require_keys
    api.state.runner = BatchRunner(client)
    api.state.metrics = metrics_registry(client.runtime)
    api.middleware("http")(metrics.RequestMetrics(api.state.metrics))
    settings = client.settings
    api.add_middleware(
        BodyLimit, max_body_bytes=settings.api_max_body_bytes, max_upload_bytes=settings.api_max_upload_bytes
    )
    api.add_exception_handler(ApiError, _api_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(ServiceUnavailable, _unavailable)
    return api
