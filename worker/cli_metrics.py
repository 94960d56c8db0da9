"""`tierflow metrics --port`: the Prometheus exporter to run beside the workers.

One exporter for the deployment: its figures are read from the store and Redis at each
scrape (worker.metrics), so they count every worker's work and survive their restarts.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)


def metrics(
    port: Annotated[int, typer.Option(help="TCP port of /metrics")] = 9464,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
) -> None:
    """Serve tierflow's Prometheus metrics (jobs, attempts, cost, tokens, calls, queues, breakers)."""
    from prometheus_client import start_http_server

    from tierflow.worker.cli import _boot
    from tierflow.worker.cli_ops import require_schema
    from tierflow.worker.metrics import metrics_registry

    _, runtime = _boot()
    require_schema(runtime.engine)
    server, thread = start_http_server(port, addr=host, registry=metrics_registry(runtime))
    err.print(f"tierflow metrics on http://{host}:{port}/metrics")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.shutdown()
    thread.join(timeout=5)


def register(cli: typer.Typer) -> None:
    cli.command()(metrics)
