"""Who is calling: the tenant of the `Authorization: Bearer` key, and OpenAI-shaped errors.

Until the first key is created the API is open (only on loopback: `tierflow serve`
refuses any other address), and the caller is the tenant None, who sees every object.
Once a key exists every request needs a valid, unrevoked one; any other gets 401.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from tierflow.store.api_keys import any_key, tenant_of
from tierflow.store.db import transaction


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.extra = status, message, code, param, extra

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code, **self.extra}
        return {"error": error}


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"no {what} {ident!r}", "not_found", param=what)


def caller_tenant(request: Request) -> str | None:
    """The tenant of the request's key (a FastAPI dependency)."""
    client = request.app.state.client
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    with transaction(client.runtime.sessions) as session:
        if not request.app.state.require_keys and not any_key(session):
            return None
        tenant = tenant_of(session, token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if tenant is None:
        raise ApiError(401, "a valid API key is required: Authorization: Bearer <key>", "invalid_api_key")
    request.state.tenant = tenant
    return tenant
