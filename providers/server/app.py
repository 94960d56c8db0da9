"""The local provider server as a thing to start and stop: in-process for tests, blocking for the CLI.

Owns binding (loopback only), the server thread, and the runtime controls that
tests use directly (faults, latency, stats). The HTTP handling lives in
`providers.server.handler`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tierflow.providers.server.answers import DEFAULT_MODELS, Answerer, ReplayBook
from tierflow.providers.server.faults import FaultPlan, FaultRule, LatencyPlan, LatencySpec
from tierflow.providers.server.handler import ServerState, StatefulHTTPServer
from tierflow.providers.server.wire import PromptCache
from tierflow.routing.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765


def loopback_host(host: str, allow_remote: bool = False) -> str:
    """`host` if it is a loopback IPv4 address ("localhost" becomes 127.0.0.1); ConfigError otherwise.

    With `allow_remote` (a container that other containers must reach), any IPv4 address is taken.
    """
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError("host", f"{host!r} is not an IP address") from None
    if address.version != 4 or not (address.is_loopback or allow_remote):
        raise ConfigError(
            "host", f"the provider server binds IPv4 loopback only, not {host} (see --allow-remote)"
        )
    return host


class ProviderServer:
    """The OpenAI- and Anthropic-compatible local provider server.

    Usage in a test::

        with ProviderServer(port=0, replay_paths=[path]) as server:
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="x")

    Args:
        port: TCP port on loopback; 0 picks a free one (read it back from `port`).
        host: a loopback IPv4 address.
        replay_paths: JSONL replay files ({"prompt", "outcomes": {model: {"response"}}}).
        models: model names answered from the rules when no replay record fits.
        replay_models: served model name -> recorded model name in the replay files.
        replay_verbatim: serve recorded text exactly as recorded, even where tierflow's
            experts ask for a JSON object (by default it is put in the object they ask
            for: `providers.server.answers.in_envelope`).
        strengths: rule strength in [0, 1] per model name (default: by name, see
            `providers.server.answers.default_strength`).
        faults: the initial fault rules (replace them with `set_faults` or POST /_control/faults).
        latency: the initial latency (replace it with `set_latency` or POST /_control/latency).
        seed: seeds the fault and latency draws.
        api_key: when given, requests must carry it (Bearer or x-api-key), else 401.
        hang_s: how long a timeout fault holds the request before answering 504.
        prompt_cache: report cached input tokens as a provider's prompt cache would: the first
            call with a model and system text writes it, later ones read it
            (`providers.server.wire.PromptCache`); off, usage reports none.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        replay_paths: Sequence[str | Path] = (),
        models: Iterable[str] = DEFAULT_MODELS,
        replay_models: Mapping[str, str] | None = None,
        strengths: Mapping[str, float] | None = None,
        faults: Sequence[FaultRule] = (),
        latency: LatencySpec | None = None,
        seed: int = 0,
        api_key: str | None = None,
        hang_s: float = 30.0,
        allow_remote: bool = False,
        replay_verbatim: bool = False,
        prompt_cache: bool = False,
    ) -> None:
        self._address = (loopback_host(host, allow_remote), port)
        book = ReplayBook.load(replay_paths)
        answerer = Answerer(book, models, replay_models, strengths, envelope=not replay_verbatim)
        self._state = ServerState(
            answerer=answerer,
            faults=FaultPlan(faults, seed=seed),
            latency=LatencyPlan(latency, seed=seed + 1),
            api_key=api_key,
            hang_s=hang_s,
            prompt_cache=PromptCache() if prompt_cache else None,
        )
        self._httpd: StatefulHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = False

    def __repr__(self) -> str:
        where = self.base_url if self._httpd else "not started"
        return f"ProviderServer({where}, models={len(self._state.answerer.models())})"

    # -- lifecycle ---------------------------------------------------------------------------------

    def bind(self) -> None:
        """Opens the listening socket (idempotent); `port` and the URLs are known from here on."""
        if self._httpd is None:
            self._state.stopping.clear()
            self._httpd = StatefulHTTPServer(self._address, self._state)

    def start(self) -> ProviderServer:
        """Binds and serves on a background thread."""
        self.bind()
        assert self._httpd is not None
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="provider-server",
            daemon=True,
        )
        self._thread.start()
        log.info("provider server listening on %s", self.base_url)
        return self

    def serve_forever(self) -> None:
        """Binds and serves on the calling thread until `stop` is called from another thread or ^C."""
        self.bind()
        assert self._httpd is not None
        log.info("provider server listening on %s", self.base_url)
        self._serving = True
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False
            self._close()

    def stop(self) -> None:
        """Stops serving, wakes requests that sleep (latency, timeout faults) and closes the socket."""
        self._state.stopping.set()
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        elif self._httpd is not None and self._serving:
            self._httpd.shutdown()  # serve_forever closes the socket as it returns
            return
        self._close()

    def _close(self) -> None:
        if self._httpd is not None:
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ProviderServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the provider server is not bound yet; call start() or bind() first")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The root URL: what the Anthropic SDK takes as base_url (the OpenAI SDK works with it too)."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Root + /v1, as the OpenAI SDK expects its base_url."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    # -- runtime controls (the same as the /_control endpoints) ------------------------------------

    def set_faults(self, rules: Sequence[FaultRule]) -> None:
        """Replaces the fault rules and restarts their counters."""
        self._state.faults.replace(rules)

    def clear_faults(self) -> None:
        self._state.faults.replace(())

    def set_latency(self, latency: LatencySpec) -> None:
        self._state.latency.replace(latency)

    def stats(self) -> dict[str, Any]:
        """Request counts by route, model and outcome, and each fault rule's counters."""
        return {**self._state.stats.snapshot(), "faults": self._state.faults.snapshot()}

    def reset_stats(self) -> None:
        self._state.stats.reset()

    def models(self) -> list[str]:
        return self._state.answerer.models()


def serve(server: ProviderServer) -> None:
    """Run a built server in the foreground until ^C or SIGTERM (`tierflow provider-server`).

    A fault plan or latency file given on a command line parses with
    `FaultPlanSpec.model_validate_json(text).rules` and `LatencySpec.model_validate_json(text)`.
    """
    _stop_on_sigterm(server)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    log.info("provider server stopped")


def _stop_on_sigterm(server: ProviderServer) -> None:
    """SIGTERM (docker stop, a supervisor) stops the server as ^C does."""
    if threading.current_thread() is not threading.main_thread():
        return

    # shutdown() waits for serve_forever to return, so it must not run on the serving thread
    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.stop, name="provider-server-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
