"""The HTTP transport under the adapters' SDK clients: one keep-alive connection per thread.

The SDKs build each request, authenticate it and type its errors; this transport only moves the
bytes. httpx2's own pool serves every thread from one list of connections under one lock, and it
walks that list for each request: with a few hundred threads (a worker's slots waiting on slow
models), that walk and the lock cost more CPU than the call. Here each thread keeps its own
connection per origin, on the standard library's `http.client`, so a call touches nothing
another thread holds.

An origin the environment sends through a proxy (HTTPS_PROXY and the like, NO_PROXY honoured)
keeps httpx2's transport, which speaks to proxies: `http_client` returns None for it.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
import urllib.request
import weakref
from typing import Any

import httpx2

Origin = tuple[str, str, int]


class KeepAliveTransport(httpx2.BaseTransport):
    """HTTP/1.1 over one reused `http.client` connection per thread and origin.

    A connection the server has closed while idle is seen before reuse (its socket reads as
    ready: an EOF) and replaced; a failure during a request closes the connection and raises
    httpx2's exception for it, which the SDK turns into its own typed error. Nothing is retried
    here: the adapters' callers own retries.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """ssl_context: for https origins; None for httpx2's default (certifi's or SSL_CERT_FILE's
        authorities, hostnames checked)."""
        self._ssl_context = ssl_context
        self._local = threading.local()
        self._lock = threading.Lock()
        # weakly: a connection lives as long as the thread that holds it (or until close)
        self._open: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._closed = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        origin: Origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        connection = self._connection(origin, timeouts.get("connect"), request)
        target = url.raw_path.decode("ascii")
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        try:
            if connection.sock is None:
                connection.connect()
        except BaseException as exc:
            self._discard(origin, connection)
            raise _translated(exc, request, connecting=True) from exc
        try:
            connection.sock.settimeout(timeouts.get("read"))
            connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders(request.read() or None)
            response = connection.getresponse()
            content = response.read()
        except BaseException as exc:
            self._discard(origin, connection)
            raise _translated(exc, request, connecting=False) from exc
        if response.will_close:
            self._discard(origin, connection)
        return httpx2.Response(
            response.status,
            headers=response.getheaders(),
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason.encode("latin-1")},
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._open = list(self._open), weakref.WeakSet()
        for connection in connections:
            connection.close()

    def _connection(self, origin: Origin, connect_s: float | None, request: httpx2.Request) -> Any:
        if self._closed:
            raise RuntimeError("the transport has been closed")
        held: dict[Origin, http.client.HTTPConnection] = self._local.__dict__.setdefault("held", {})
        connection = held.get(origin)
        if connection is not None and _stale(connection):
            self._discard(origin, connection)
            connection = None
        if connection is None:
            scheme, host, port = origin
            if scheme == "https":
                if self._ssl_context is None:  # built once: loading the CA bundle takes milliseconds
                    self._ssl_context = httpx2.create_ssl_context()
                connection = http.client.HTTPSConnection(
                    host, port, timeout=connect_s, context=self._ssl_context
                )
            elif scheme == "http":
                connection = http.client.HTTPConnection(host, port, timeout=connect_s)
            else:
                raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
            held[origin] = connection
            with self._lock:
                self._open.add(connection)
        return connection

    def _discard(self, origin: Origin, connection: http.client.HTTPConnection) -> None:
        connection.close()
        held = self._local.__dict__.get("held", {})
        if held.get(origin) is connection:
            del held[origin]
        with self._lock:
            self._open.discard(connection)


def _stale(connection: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that reads as ready has been closed (or sent junk) by the server."""
    if connection.sock is None:
        return True
    try:
        if hasattr(select, "poll"):  # select() refuses descriptors past 1023
            poller = select.poll()
            poller.register(connection.sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([connection.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _translated(exc: BaseException, request: httpx2.Request, *, connecting: bool) -> BaseException:
    """httpx2's exception for a failure of the socket or of the HTTP exchange."""
    if not isinstance(exc, OSError | http.client.HTTPException):
        return exc
    message = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        kind: type[httpx2.TransportError] = httpx2.ConnectTimeout if connecting else httpx2.ReadTimeout
    elif isinstance(exc, http.client.HTTPException):
        kind = httpx2.RemoteProtocolError
    elif connecting:
        kind = httpx2.ConnectError
    else:
        kind = httpx2.ReadError
    return kind(message, request=request)


def http_client(base_url: str | None, timeout_s: float) -> httpx2.Client | None:
    """The httpx2 client an adapter's SDK client should use for base_url (None: the SDK's own
    https endpoint): on KeepAliveTransport, unless the environment proxies that origin (then
    None, and the SDK builds its own client, which goes through the proxy)."""
    url = httpx2.URL(base_url) if base_url else None
    scheme = url.scheme if url is not None else "https"
    proxies = urllib.request.getproxies_environment()
    proxied = proxies.get(scheme) or proxies.get("all")
    if proxied and not (url is not None and urllib.request.proxy_bypass(url.host)):
        return None
    return httpx2.Client(transport=KeepAliveTransport(), timeout=timeout_s, follow_redirects=True)
