"""Operator commands: `tierflow worker`, `tierflow beat`, `tierflow db ...`, `tierflow reconcile`."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import Engine

from tierflow.routing.errors import ConfigError, StoreError
from tierflow.routing.states import Tier
from tierflow.store import schema
from tierflow.store.db import check_database, make_engine, redact
from tierflow.worker.app import ALL_QUEUES, CLASSIFY_QUEUE, create_app
from tierflow.worker.kinds import build_registry
from tierflow.worker.settings import load_settings

log = logging.getLogger(__name__)
ops = typer.Typer(add_completion=False, no_args_is_help=True)
out = Console(soft_wrap=True)

POOLS = ("prefork", "threads", "gevent", "eventlet", "solo")


def require_schema(engine: Engine) -> None:
    """Raise StoreError unless the database is migrated to the head revision."""
    current, head = schema.current_revision(engine), schema.head_revision(engine)
    if current != head:
        raise StoreError(
            f"database {redact(str(engine.url))} is at revision {current or 'none'}, expected {head}: "
            "run `tierflow db upgrade`"
        )


def _engine() -> Engine:
    engine = make_engine(load_settings().database_url)
    check_database(engine)
    return engine


@ops.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the migrations up to REVISION (default: head)."""
    engine = _engine()
    schema.upgrade(engine, revision)
    out.print(f"database {redact(str(engine.url))} at revision {schema.current_revision(engine)}")


@ops.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()] = "base") -> None:
    """Revert the migrations down to REVISION (default: base, an empty schema)."""
    engine = _engine()
    schema.downgrade(engine, revision)
    out.print(f"database {redact(str(engine.url))} at revision {schema.current_revision(engine) or 'base'}")


@ops.command("current")
def db_current() -> None:
    """Print the database's revision and the head revision."""
    engine = _engine()
    out.print(f"current {schema.current_revision(engine) or 'none'}, head {schema.head_revision(engine)}")


def worker_queues(queues: str | None, tier: list[Tier] | None) -> list[str]:
    chosen = [q.strip() for q in (queues or "").split(",") if q.strip()]
    chosen += [t.queue for t in tier or []]
    if not chosen:
        chosen = [CLASSIFY_QUEUE]
    unknown = [q for q in chosen if q not in ALL_QUEUES]
    if unknown:
        raise ConfigError("--queues", f"unknown queues {', '.join(unknown)}; known: {', '.join(ALL_QUEUES)}")
    return list(dict.fromkeys(chosen))


def worker_argv(
    queues: list[str],
    pool: str | None,
    concurrency: int | None,
    autoscale: str | None,
    loglevel: str,
    hostname: str | None,
) -> list[str]:
    """The `celery worker` arguments that `tierflow worker` stands for."""
    pool = pool or default_pool(queues, bool(autoscale))
    if pool not in POOLS:
        raise ConfigError("--pool", f"unknown pool {pool}; known: {', '.join(POOLS)}")
    if autoscale and pool not in ("prefork",):
        raise ConfigError("--autoscale", f"the {pool} pool cannot autoscale; use --pool prefork")
    name = hostname or f"{'+'.join(queues)}-{socket.gethostname()}"
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--pool",
        pool,
        "--loglevel",
        loglevel,
        "--hostname",
        f"{name}@%h" if "@" not in name else name,
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if autoscale:
        argv += ["--autoscale", autoscale]
    return argv


# A slot holds a database connection only for a transaction (milliseconds), never across a
# model call: a worker of threads needs far fewer connections than slots.
THREADS_POOL_CONNECTIONS = 16


def default_pool(queues: list[str], autoscale: bool = False) -> str:
    """Threads for a worker of tier and classify queues, else prefork (maintenance's reflect fits
    models); prefork for a worker that is to autoscale.

    Tier tasks wait on model calls; classify's on PostgreSQL, the broker (it publishes attempt
    1's chord) and, when the rules are unsure, a model: passing each task to a child process
    cost more CPU than the task (bench/throughput.py: 40 ms of worker CPU a job with classify
    on prefork, 33 on threads)."""
    if autoscale:
        return "prefork"
    waits = all(q.startswith("tier.") or q == CLASSIFY_QUEUE for q in queues)
    return "threads" if waits else "prefork"


def pool_settings(slots: int, pool: str | None, queues: list[str], autoscale: bool = False) -> dict[str, int]:
    """The database pool a worker keeps: one connection per slot, at most THREADS_POOL_CONNECTIONS
    for a worker of threads."""
    if not slots:
        return {}
    threads = (pool or default_pool(queues, autoscale)) in ("threads", "gevent", "eventlet")
    return {"db_pool_size": min(slots, THREADS_POOL_CONNECTIONS) if threads else slots}


def register(cli: typer.Typer) -> None:
    """Add `worker`, `beat` and `reconcile` to the main command line."""

    @cli.command()
    def worker(
        queues: Annotated[str | None, typer.Option(help="Comma-separated queues to serve")] = None,
        tier: Annotated[list[Tier] | None, typer.Option(help="Serve tier.<TIER> (repeatable)")] = None,
        pool: Annotated[
            str | None, typer.Option(help="threads (default for tiers), prefork, gevent, solo")
        ] = None,
        concurrency: Annotated[int | None, typer.Option(help="Worker slots")] = None,
        autoscale: Annotated[str | None, typer.Option(help="MAX,MIN (prefork only)")] = None,
        loglevel: Annotated[str, typer.Option()] = "INFO",
        hostname: Annotated[str | None, typer.Option(help="Node name")] = None,
    ) -> None:
        """Run a Celery worker on the given queues (wraps `celery worker`)."""
        slots = max(concurrency or 0, int(autoscale.split(",")[0]) if autoscale else 0)
        chosen = worker_queues(queues, tier)
        settings = load_settings(**pool_settings(slots, pool, chosen, bool(autoscale)))
        if settings.embedded:
            raise ConfigError(
                "TIERFLOW_BROKER_URL", "a separate worker needs a broker server (redis:// or amqp://)"
            )
        settings.require_resilience_store()
        build_registry(settings)  # a bad kinds file or plug-in stops the worker here, with every problem
        argv = worker_argv(chosen, pool, concurrency, autoscale, loglevel, hostname)
        if settings.resilience_local:
            log.warning(
                "breakers and rate limits are per-process (TIERFLOW_RESILIENCE_REDIS_URL=local): "
                "each worker process opens its own breakers and spends its own allowance"
            )
        create_app(settings).worker_main(argv=argv)

    @cli.command()
    def beat(
        schedule: Annotated[str, typer.Option(help="Beat's schedule file")] = "celerybeat-schedule",
        loglevel: Annotated[str, typer.Option()] = "INFO",
    ) -> None:
        """Run Celery beat: the periodic maintenance tasks (run exactly one)."""
        settings = load_settings()
        create_app(settings).start(argv=["beat", "--schedule", schedule, "--loglevel", loglevel])

    @cli.command("provider-server")
    def provider_server(
        port: Annotated[int, typer.Option(help="TCP port")] = 8765,
        host: Annotated[str, typer.Option(help="IPv4 address to bind (loopback unless --allow-remote)")] = (
            "127.0.0.1"
        ),
        allow_remote: Annotated[
            bool, typer.Option(help="Allow a non-loopback --host, e.g. 0.0.0.0 in a container")
        ] = False,
        replay: Annotated[list[Path] | None, typer.Option(help="Replay JSONL file (repeatable)")] = None,
        replay_model: Annotated[
            list[str] | None, typer.Option(help="SERVED=RECORDED model name mapping (repeatable)")
        ] = None,
        replay_verbatim: Annotated[
            bool, typer.Option(help="Serve recorded text as recorded, not in the JSON object asked for")
        ] = False,
        faults: Annotated[Path | None, typer.Option(help="JSON fault plan file")] = None,
        latency: Annotated[Path | None, typer.Option(help="JSON latency file")] = None,
        seed: Annotated[int, typer.Option(help="Seed for latency jitter and random faults")] = 0,
        prompt_cache: Annotated[
            bool, typer.Option(help="Report cached input tokens (a repeated system text reads the cache)")
        ] = False,
    ) -> None:
        """Serve the OpenAI and Anthropic HTTP APIs on loopback from replays and rules."""
        from tierflow.providers.server import FaultPlanSpec, LatencySpec, ProviderServer, serve

        mapping = dict(pair.split("=", 1) for pair in replay_model or [] if "=" in pair)
        server = ProviderServer(
            port=port,
            host=host,
            allow_remote=allow_remote,
            replay_paths=replay or [],
            replay_models=mapping or None,
            replay_verbatim=replay_verbatim,
            faults=FaultPlanSpec.model_validate_json(faults.read_text()).rules if faults else (),
            latency=LatencySpec.model_validate_json(latency.read_text()) if latency else None,
            seed=seed,
            prompt_cache=prompt_cache,
        )
        serve(server)

    kb = typer.Typer(add_completion=False, no_args_is_help=True)
    cli.add_typer(kb, name="kb", help="The knowledge base of policy articles the support retriever searches.")

    @kb.command("load")
    def kb_load(
        folder: Annotated[Path, typer.Argument(help="Folder of *.md articles")] = Path("examples/kb"),
    ) -> None:
        """Load (insert or replace) the articles into the database, for PostgreSQL full-text search."""
        from tierflow.store.db import make_sessions, transaction
        from tierflow.store.knowledge import load_articles, read_articles

        engine = _engine()
        require_schema(engine)
        with transaction(make_sessions(engine)) as session:
            count = load_articles(session, read_articles(folder))
        out.print(f"loaded {count} articles from {folder} into {redact(str(engine.url))}")

    @cli.command()
    def reconcile() -> None:
        """Re-enqueue stale jobs now, once (what beat does every reconcile_interval_s)."""
        from tierflow.store.models import utcnow
        from tierflow.tasks.reconcile import requeue_stale
        from tierflow.tasks.runtime import runtime_for

        app = create_app(load_settings())
        out.print(requeue_stale(app, runtime_for(app), utcnow()))
