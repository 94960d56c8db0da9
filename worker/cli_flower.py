"""`tierflow flower`: Flower, the Celery monitor, for the tierflow app, behind basic auth.

Flower is a `celery` subcommand (an entry point of the `flower` distribution); this
module starts it for the app built from the settings. Basic auth comes from
`flower_user` / `flower_password` (TIERFLOW_FLOWER_USER, TIERFLOW_FLOWER_PASSWORD):
without them the command refuses to start unless `--insecure` is given. The
credentials reach Flower in an in-process argument list, never the process's
command line, and are never printed.

Imports no task module of its own; Flower is imported only when the command runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tierflow.routing.errors import ConfigError
from tierflow.worker.app import ALL_QUEUES, create_app
from tierflow.worker.settings import Settings, load_settings


def flower_argv(settings: Settings, port: int, address: str, insecure: bool) -> list[str]:
    """The `celery flower` arguments; holds the password, so it is never to be logged."""
    argv = ["flower", f"--port={port}", f"--address={address}"]
    user, password = settings.flower_user, settings.flower_password
    if user and password is not None and password.get_secret_value():
        if ":" in user or "," in user:
            raise ConfigError("TIERFLOW_FLOWER_USER", "a basic-auth user name cannot contain ':' or ','")
        # Flower's option takes a comma-separated list: a comma would split one credential in two.
        if "," in password.get_secret_value():
            raise ConfigError("TIERFLOW_FLOWER_PASSWORD", "cannot contain ','")
        return [*argv, f"--basic_auth={user}:{password.get_secret_value()}"]
    if not insecure:
        raise ConfigError(
            "TIERFLOW_FLOWER_USER",
            "Flower needs basic auth: set TIERFLOW_FLOWER_USER and TIERFLOW_FLOWER_PASSWORD "
            "(or pass --insecure to run it open)",
        )
    return argv


def list_every_queue() -> None:
    """Make Flower's queue lengths cover every tierflow queue, served or not.

    Flower lists only the queues that the workers it has inspected consume, so a tier
    with no worker running (exactly when its backlog grows) would vanish from
    /api/queues/length and the Broker page. The declared queues are added to them.
    """
    from flower.views import BaseHandler

    served = BaseHandler.get_active_queue_names

    def every_queue(handler: Any) -> list[str]:
        return sorted(set(served(handler)) | set(ALL_QUEUES))

    BaseHandler.get_active_queue_names = every_queue


def register(cli: typer.Typer) -> None:
    """Add `flower` to the main command line."""

    @cli.command()
    def flower(
        port: Annotated[int, typer.Option(help="Port for Flower's web UI and API")] = 5555,
        address: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 in a container)")] = "127.0.0.1",
        insecure: Annotated[
            bool, typer.Option("--insecure", help="Start without basic auth when no credentials are set")
        ] = False,
    ) -> None:
        """Run Flower for the tierflow app (basic auth from TIERFLOW_FLOWER_USER/_PASSWORD)."""
        settings = load_settings()
        if settings.embedded:
            raise ConfigError("TIERFLOW_BROKER_URL", "Flower needs a broker server (redis:// or amqp://)")
        argv = flower_argv(settings, port, address, insecure)
        try:
            import flower as _flower  # noqa: F401 - only to tell a missing install apart
        except ImportError:
            raise ConfigError("flower", "Flower is not installed: pip install 'flower>=2'") from None
        list_every_queue()
        create_app(settings).start(argv=argv)
