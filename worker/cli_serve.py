"""`tierflow serve` (the HTTP API on uvicorn) and `tierflow keys` (its API keys per tenant).

`serve` listens on loopback by default; any other address needs at least one API key,
and keeps needing one (a server bound elsewhere never runs open, even if every key is
revoked later). In embedded mode it runs the worker in its own process, as `submit` does.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tierflow.routing.errors import ConfigError, InputError
from tierflow.store.api_keys import any_active_key, create_key, list_keys, revoke_key
from tierflow.store.db import transaction

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
keys_app = typer.Typer(add_completion=False, no_args_is_help=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _runtime() -> Any:
    from tierflow.worker.cli import _boot
    from tierflow.worker.cli_ops import require_schema

    _, runtime = _boot()
    require_schema(runtime.engine)
    return runtime


def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; not loopback only with API keys")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level")] = "info",
    openapi: Annotated[bool, typer.Option("--openapi", help="Print the OpenAPI document and exit")] = False,
) -> None:
    """Serve the HTTP API: OpenAI Files/Batch/Chat Completions, tierflow's endpoints, /metrics."""
    import uvicorn

    from tierflow.api.app import create_api, openapi_document
    from tierflow.client import Client
    from tierflow.worker.logs import configure_process

    if openapi:
        typer.echo(json.dumps(openapi_document(), indent=2, sort_keys=True))
        return

    with Client.from_settings() as client:
        configure_process(client.settings)
        with transaction(client.runtime.sessions) as session:
            keyed = any_active_key(session)
        loopback = is_loopback(host)
        if not loopback and not keyed:
            raise ConfigError(
                "serve --host",
                f"{host} is not a loopback address and no API key exists: "
                "create one first with `tierflow keys create --tenant NAME`",
            )
        api = create_api(client, require_keys=not loopback)
        err.print(
            f"tierflow API on http://{host}:{port} ({'keys required' if keyed else 'open: no keys yet'})"
        )
        uvicorn.run(api, host=host, port=port, log_level=log_level)


@keys_app.command("create")
def keys_create(tenant: Annotated[str, typer.Option(help="The tenant the key acts for")]) -> None:
    """Create an API key; it is printed once, alone on the last line (only its hash is kept)."""
    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        info, secret = create_key(session, tenant)
    out.print(f"key {info.id} for tenant {info.tenant}; it is shown only now:", markup=False, highlight=False)
    typer.echo(secret)


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, tenant, first characters, created, revoked."""
    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        rows = list_keys(session)
    table = Table(title=f"{len(rows)} API keys")
    for column in ("id", "tenant", "key", "created", "revoked"):
        table.add_column(column)
    for row in rows:
        revoked = row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else ""
        table.add_row(row.id, row.tenant, row.hint, row.created_at.isoformat(timespec="seconds"), revoked)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (tierflow keys list)")]) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        if not revoke_key(session, key_id):
            raise InputError("tierflow keys revoke", 0, "key", f"no active key {key_id!r}")
    out.print(f"{key_id} revoked")


def register(cli: typer.Typer) -> None:
    cli.command()(serve)
    cli.add_typer(keys_app, name="keys", help="Create, list and revoke the HTTP API's keys.")
