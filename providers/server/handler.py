"""HTTP request handling of the local provider server.

Owns the routes (OpenAI `/v1/chat/completions`, `/v1/models`, `/v1/embeddings`;
Anthropic `/v1/messages`; `/_control/*`), the state the handler threads share,
request counting, and how each injected fault goes on the wire. A leading `/v1`
is optional, so both SDKs work with the server's root URL or root + `/v1`.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, ValidationError

from tierflow.providers.server.answers import Answerer
from tierflow.providers.server.anthropic_wire import AnthropicWire
from tierflow.providers.server.embeddings import Embedder, embeddings_body, parse_embeddings
from tierflow.providers.server.faults import (
    Fault,
    FaultPlan,
    FaultPlanSpec,
    FaultRule,
    LatencyPlan,
    LatencySpec,
)
from tierflow.providers.server.openai_wire import OpenAIWire
from tierflow.providers.server.wire import ChatCall, ErrorKind, PromptCache, Wire, WireError, reply_to

log = logging.getLogger(__name__)

OPENAI = OpenAIWire()
ANTHROPIC = AnthropicWire()
DEFAULT_RETRY_AFTER_S = 1.0
MAX_BODY_BYTES = 16 * 1024 * 1024


class ServerStats:
    """Request counts by route, model and outcome (answer source, fault or error kind)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_route: Counter[str] = Counter()
        self._by_model: Counter[str] = Counter()
        self._by_outcome: Counter[str] = Counter()

    def record(self, route: str, model: str | None, outcome: str) -> None:
        with self._lock:
            self._by_route[route] += 1
            self._by_outcome[outcome] += 1
            if model is not None:
                self._by_model[model] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self._by_route.values()),
                "by_route": dict(self._by_route),
                "by_model": dict(self._by_model),
                "by_outcome": dict(self._by_outcome),
            }

    def reset(self) -> None:
        with self._lock:
            self._by_route.clear()
            self._by_model.clear()
            self._by_outcome.clear()


@dataclass
class ServerState:
    """What every handler thread shares; the plans inside are replaced at runtime."""

    answerer: Answerer
    faults: FaultPlan
    latency: LatencyPlan
    api_key: str | None = None
    hang_s: float = 30.0
    prompt_cache: PromptCache | None = None  # None: usage reports no cached tokens
    stats: ServerStats = field(default_factory=ServerStats)
    embedder: Embedder = field(default_factory=Embedder)
    stopping: threading.Event = field(default_factory=threading.Event)


class StatefulHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the shared state and stays quiet about gone clients."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        super().__init__(address, ProviderRequestHandler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("provider server: connection from %s ended with an error", client_address, exc_info=True)


class ProviderRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tierflow-provider-server"
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would hold the body ~40 ms
    server: StatefulHTTPServer

    @property
    def state(self) -> ServerState:
        return self.server.state

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("provider server: " + format, *args)

    # -- routing ---------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        routes: dict[str, Callable[[], None]] = {
            "/models": self._models,
            "/_control/stats": lambda: self._send_json(200, self._stats()),
            "/_control/faults": lambda: self._send_json(200, {"rules": self.state.faults.snapshot()}),
            "/_control/latency": lambda: self._send_json(200, self.state.latency.spec().model_dump()),
        }
        self._dispatch(routes)

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        routes: dict[str, Callable[[], None]] = {
            "/chat/completions": lambda: self._chat(OPENAI, "chat.completions"),
            "/messages": lambda: self._chat(ANTHROPIC, "messages"),
            "/embeddings": self._embeddings,
            "/_control/faults": lambda: self._control(FaultPlanSpec, self._set_faults),
            "/_control/latency": lambda: self._control(LatencySpec, self.state.latency.replace),
            "/_control/reset": self._reset,
        }
        self._dispatch(routes)

    def _dispatch(self, routes: dict[str, Callable[[], None]]) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        while path.startswith("/v1/"):
            path = path[len("/v1") :]
        route = routes.get(path)
        if route is None:
            self.close_connection = True  # the unread body must not be taken for the next request
            self._send_error(self._wire(), WireError(ErrorKind.NOT_FOUND, f"no route {self.command} {path}"))
            return
        try:
            route()
        except WireError as err:  # a body too large or not JSON, outside a chat call
            self._send_error(self._wire(), err)

    def _wire(self) -> Wire:
        return ANTHROPIC if "anthropic-version" in self.headers else OPENAI

    # -- protocol endpoints ------------------------------------------------------------------------

    def _chat(self, wire: Wire, route: str) -> None:
        request_id = uuid.uuid4().hex[:24]
        try:
            body = self._read_json()
            self._check_key(wire)
            call = wire.parse_chat(body)
        except WireError as err:
            self.state.stats.record(route, None, err.kind.value)
            self._send_error(wire, err, request_id)
            return
        rule = self.state.faults.draw(call.model)
        if rule is None or rule.fault is not Fault.RATE_LIMIT:
            self._pause(self.state.latency.draw_s(call.model))
        if rule is not None:
            self.state.stats.record(route, call.model, rule.fault.value)
            self._inject(wire, call, rule, request_id)
            return
        self._answer(wire, route, call, request_id)

    def _answer(self, wire: Wire, route: str, call: ChatCall, request_id: str) -> None:
        answer = self.state.answerer.answer(call.model, call.system, call.user)
        if answer is None:
            self.state.stats.record(route, call.model, ErrorKind.NOT_FOUND.value)
            message = f"The model `{call.model}` does not exist or is not served by this server."
            self._send_error(wire, WireError(ErrorKind.NOT_FOUND, message), request_id)
            return
        self.state.stats.record(route, call.model, answer.source.value)
        reply = reply_to(call, answer.text)
        if self.state.prompt_cache is not None:
            reply = self.state.prompt_cache.usage(call, reply)
        body = wire.chat_body(call, reply, request_id)
        headers = {wire.request_id_header: request_id, "x-tierflow-answer-source": answer.source.value}
        self._send_json(200, body, headers)

    def _models(self) -> None:
        wire = self._wire()
        self._send_json(200, wire.models_body(self.state.answerer.models()))

    def _embeddings(self) -> None:
        request_id = uuid.uuid4().hex[:24]
        try:
            body = self._read_json()
            self._check_key(OPENAI)
            call = parse_embeddings(body)
            vectors = self.state.embedder.embed(call.texts)  # the first call loads the model
        except WireError as err:
            self.state.stats.record("embeddings", None, err.kind.value)
            self._send_error(OPENAI, err, request_id)
            return
        self.state.stats.record("embeddings", call.model, "embeddings")
        self._send_json(200, embeddings_body(call, vectors), {OPENAI.request_id_header: request_id})

    def _check_key(self, wire: Wire) -> None:
        expected = self.state.api_key
        if expected is None:
            return
        given = wire.api_key({name.lower(): value for name, value in self.headers.items()}) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise WireError(ErrorKind.AUTHENTICATION, "Incorrect API key provided.")

    # -- injected faults ---------------------------------------------------------------------------

    def _inject(self, wire: Wire, call: ChatCall, rule: FaultRule, request_id: str) -> None:
        retry_after = rule.retry_after_s
        if rule.fault is Fault.RATE_LIMIT:
            retry_after = DEFAULT_RETRY_AFTER_S if retry_after is None else retry_after
            message = f"Rate limit reached for {call.model}; please try again later."
            self._send_error(wire, WireError(ErrorKind.RATE_LIMIT, message), request_id, retry_after)
        elif rule.fault is Fault.SERVER_ERROR:
            message = "The server had an error while processing your request (injected fault)."
            self._send_error(wire, WireError(ErrorKind.SERVER_ERROR, message), request_id, retry_after)
        elif rule.fault is Fault.UNAVAILABLE:
            message = "The server is overloaded or not ready yet (injected fault)."
            self._send_error(wire, WireError(ErrorKind.UNAVAILABLE, message), request_id, retry_after)
        elif rule.fault is Fault.TIMEOUT:
            self._pause(self.state.hang_s)
            self._send_error(wire, WireError(ErrorKind.TIMEOUT, "The request timed out (injected fault)."))
        elif rule.fault is Fault.MALFORMED:
            whole = json.dumps(wire.chat_body(call, reply_to(call, "malformed"), request_id)).encode()
            self._send_bytes(200, whole[: len(whole) // 2], {wire.request_id_header: request_id})
        elif rule.fault is Fault.INVALID_SHAPE:
            body = wire.invalid_shape_body(call, request_id)
            self._send_json(200, body, {wire.request_id_header: request_id})
        else:  # Fault.DISCONNECT: no status line at all
            self.close_connection = True

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.state.stopping.wait(seconds)  # wakes at once when the server stops

    # -- control endpoints -------------------------------------------------------------------------

    def _control(self, spec_type: type[BaseModel], apply: Callable[[Any], None]) -> None:
        try:
            spec = spec_type.model_validate(self._read_json())
        except WireError as err:
            self._send_error(OPENAI, err)
            return
        except ValidationError as err:
            detail = json.loads(err.json(include_url=False, include_context=False, include_input=False))
            self._send_json(400, {"error": {"message": "invalid control body", "detail": detail}})
            return
        apply(spec)
        self._send_json(200, {"ok": True, **self._stats()})

    def _set_faults(self, spec: FaultPlanSpec) -> None:
        self.state.faults.replace(spec.rules)

    def _reset(self) -> None:
        self._read_body()
        self.state.stats.reset()
        self._send_json(200, {"ok": True, **self._stats()})

    def _stats(self) -> dict[str, Any]:
        return {**self.state.stats.snapshot(), "faults": self.state.faults.snapshot()}

    # -- bodies ------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise WireError(ErrorKind.INVALID_REQUEST, "request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _read_json(self) -> object:
        raw = self._read_body()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise WireError(ErrorKind.INVALID_REQUEST, "the request body is not valid JSON") from None

    def _send_error(
        self, wire: Wire, err: WireError, request_id: str | None = None, retry_after_s: float | None = None
    ) -> None:
        request_id = request_id or uuid.uuid4().hex[:24]
        headers = {wire.request_id_header: request_id}
        if retry_after_s is not None:
            headers["retry-after"] = str(math.ceil(retry_after_s))  # whole seconds, never earlier
            headers["retry-after-ms"] = str(int(retry_after_s * 1000))
        self._send_json(err.status, wire.error_body(err.kind, err.message, request_id), headers)

    def _send_json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), headers)

    def _send_bytes(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout fault does this on purpose)
