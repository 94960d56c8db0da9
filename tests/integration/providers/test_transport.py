"""The adapters' HTTP transport: one kept-alive connection per thread, a connection the server
closed replaced before reuse, failures typed, proxies left to httpx2.

A small HTTP/1.1 server on a loopback port counts the connections it accepts; every call goes
through the official openai SDK and the OpenAIProvider, as in the pipeline.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.integration.providers.support import API_KEY, PRICES, USER
from tierflow.providers.base import CompletionRequest
from tierflow.providers.openai import OpenAIProvider
from tierflow.providers.transport import KeepAliveTransport, http_client
from tierflow.routing.errors import ProviderTimeout, ProviderUnavailable

pytestmark = pytest.mark.timeout(30)

MODEL = "gpt-4o-mini"
REQUEST = CompletionRequest(system="", user=USER, timeout_s=5.0)


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.requests = 0
        self.close_after_reply = False  # close the socket after each reply, saying nothing
        self.hold_s = 0.0
        self.gzip = False  # compress replies, as api.openai.com does
        self.compressed = 0
        self.lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    @property
    def base_url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.server.lock:
            self.server.requests += 1
        if self.server.hold_s:
            threading.Event().wait(self.server.hold_s)
        reply = json.dumps(
            {
                "id": f"chatcmpl-{self.server.requests}",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": body["model"]}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
        ).encode()
        compressed = self.server.gzip and "gzip" in self.headers.get("accept-encoding", "")
        if compressed:
            reply = gzip.compress(reply)
            self.server.compressed += 1
        try:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            if compressed:
                self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except BrokenPipeError:  # a client that timed out has gone
            self.close_connection = True
            return
        self.close_connection = self.server.close_after_reply

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(server: CountingServer) -> Iterator[CountingServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def counting() -> Iterator[CountingServer]:
    with serving(CountingServer()) as server:
        yield server


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[CountingServer, ssl.SSLContext]]:
    """The counting server over TLS with a certificate made for this test, and a client context
    that trusts it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    server = CountingServer()
    server.socket = served.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server, ssl.create_default_context(cafile=str(cert))


@pytest.fixture
def provider(counting: CountingServer) -> Iterator[OpenAIProvider]:
    adapter = OpenAIProvider(api_key=API_KEY, prices=PRICES, base_url=counting.base_url)
    yield adapter
    adapter.close()


def test_one_thread_reuses_one_connection(counting: CountingServer, provider: OpenAIProvider) -> None:
    texts = [provider.complete(MODEL, REQUEST).text for _ in range(20)]
    assert texts == [MODEL] * 20
    assert (counting.requests, counting.connections) == (20, 1)


def test_a_compressed_reply_is_decoded(counting: CountingServer, provider: OpenAIProvider) -> None:
    counting.gzip = True
    completion = provider.complete(MODEL, REQUEST)
    assert (completion.text, completion.input_tokens, completion.output_tokens) == (MODEL, 3, 1)
    assert counting.compressed == 1


def test_each_thread_keeps_its_own_connection(counting: CountingServer, provider: OpenAIProvider) -> None:
    errors: list[BaseException] = []

    def calls() -> None:
        try:
            for _ in range(10):
                provider.complete(MODEL, REQUEST)
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (counting.requests, counting.connections) == (40, 4)


def test_a_connection_the_server_closed_is_replaced_before_reuse(
    counting: CountingServer, provider: OpenAIProvider
) -> None:
    counting.close_after_reply = True  # no "Connection: close": the client finds out on its own
    for _ in range(5):
        assert provider.complete(MODEL, REQUEST).text == MODEL
        threading.Event().wait(0.05)  # the server's close reaches the idle socket
    assert (counting.requests, counting.connections) == (5, 5)


def test_a_slow_reply_times_out_as_the_request_says_and_the_next_call_works(
    counting: CountingServer, provider: OpenAIProvider
) -> None:
    counting.hold_s = 1.0
    with pytest.raises(ProviderTimeout):
        provider.complete(MODEL, CompletionRequest(system="", user=USER, timeout_s=0.2))
    counting.hold_s = 0.0
    assert provider.complete(MODEL, REQUEST).text == MODEL
    assert counting.connections == 2  # the timed-out connection was not reused


def test_nothing_listening_is_a_connection_failure() -> None:
    with socket.socket() as probe:  # a loopback port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = OpenAIProvider(api_key=API_KEY, prices=PRICES, base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ProviderUnavailable) as raised:
        adapter.complete(MODEL, REQUEST)
    assert raised.value.reason == "connection failed"
    adapter.close()


def test_close_closes_every_thread_s_connection(counting: CountingServer) -> None:
    transport = KeepAliveTransport()
    client = httpx2.Client(transport=transport)
    url = f"{counting.base_url}/chat/completions"
    payload = {"model": MODEL, "messages": []}
    called, release = threading.Barrier(4), threading.Event()

    def call_and_hold() -> None:  # a thread's connections live as long as the thread
        client.post(url, json=payload)
        called.wait(timeout=10)
        release.wait(timeout=10)

    threads = [threading.Thread(target=call_and_hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    called.wait(timeout=10)
    held = list(transport._open)
    assert len(held) == 3 and all(connection.sock is not None for connection in held)
    client.close()
    assert all(connection.sock is None for connection in held)
    release.set()
    for thread in threads:
        thread.join()
    with pytest.raises(RuntimeError, match="closed"):
        client.post(url, json=payload)


def test_a_thread_s_connection_goes_with_the_thread(counting: CountingServer) -> None:
    transport = KeepAliveTransport()
    client = httpx2.Client(transport=transport)
    url, payload = f"{counting.base_url}/chat/completions", {"model": MODEL, "messages": []}
    replies: list[int] = []
    thread = threading.Thread(target=lambda: replies.append(client.post(url, json=payload).status_code))
    thread.start()
    thread.join()
    assert replies == [200]
    assert len(transport._open) == 0  # not held open for a thread that will never use it again
    client.close()


def test_https_checks_the_certificate_and_keeps_the_connection(
    tls: tuple[CountingServer, ssl.SSLContext],
) -> None:
    server, trusting = tls
    url, payload = f"{server.base_url}/chat/completions", {"model": MODEL, "messages": []}
    with httpx2.Client(transport=KeepAliveTransport(ssl_context=trusting)) as client:
        assert [
            client.post(url, json=payload).json()["choices"][0]["message"]["content"] for _ in range(3)
        ] == [MODEL] * 3
    assert (server.requests, server.connections) == (3, 1)
    # the adapter, on the default authorities, does not trust a certificate made up on the spot
    adapter = OpenAIProvider(api_key=API_KEY, prices=PRICES, base_url=server.base_url)
    with pytest.raises(ProviderUnavailable) as raised:
        adapter.complete(MODEL, REQUEST)
    assert raised.value.reason == "connection failed"
    causes, cause = [], raised.value.__cause__
    while cause is not None:
        causes.append(type(cause))
        cause = cause.__cause__
    assert ssl.SSLCertVerificationError in causes, causes
    adapter.close()


def test_a_proxied_origin_keeps_httpx2s_own_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert isinstance(http_client("https://api.example.com/v1", 5.0), httpx2.Client)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert http_client("https://api.example.com/v1", 5.0) is None
    assert http_client(None, 5.0) is None  # the SDK's own endpoint is https
    assert isinstance(http_client("http://127.0.0.1:8765/v1", 5.0), httpx2.Client)
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert isinstance(http_client("https://api.example.com/v1", 5.0), httpx2.Client)
