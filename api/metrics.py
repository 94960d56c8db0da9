"""`GET /metrics` of the API: the store's figures (worker.metrics) and this process's requests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from tierflow.api.auth import caller_tenant

router = APIRouter(tags=["metrics"])


class RequestMetrics:
    """Requests served by this API process, by method, route template and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tierflow_http_requests", "HTTP requests served", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "tierflow_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        self.requests.labels(request.method, template, str(response.status_code)).inc()
        self.latency.labels(request.method, template).observe(time.perf_counter() - started)
        return response


@router.get(
    "/metrics",
    summary="Prometheus metrics of the whole deployment (a key is needed once keys exist)",
    response_class=Response,
    dependencies=[Depends(caller_tenant)],
)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
