"""Warm start: what a worker process would otherwise build during its first tasks.

A prefork worker's parent loads what forks share (the token encoding, the database
driver) before its children fork; each child, and a worker of threads, then builds
its runtime (engine, providers, policy) before it takes a message. Without this, the
first task of every child paid for it, a cost that came back with every restart.
Nothing here is required for correctness: a failure is logged and the task that
needs the part builds it, as before.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app, signals

from tierflow.providers.tokens import DEFAULT_ENCODING, count_tokens
from tierflow.tasks.runtime import runtime_for

log = logging.getLogger(__name__)


def _tierflow_app(app: Any) -> bool:
    return app is not None and hasattr(app, "tierflow_settings")


def preload() -> None:
    """Load what is the same in every process and safe to share across a fork."""
    count_tokens("warm", DEFAULT_ENCODING)
    import psycopg  # noqa: F401 - the driver's import is most of building the first engine
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401


def warm_runtime(app: Any) -> None:
    """Build this process's runtime and read the policy, as the first task would."""
    try:
        runtime_for(app).policy()
    except Exception as exc:  # noqa: BLE001 - a database down at start is the first task's to meet
        log.warning("warm start: runtime not built ahead (%s: %s)", type(exc).__name__, exc)


@signals.worker_init.connect
def warm_parent(sender: Any = None, **_: Any) -> None:
    if _tierflow_app(getattr(sender, "app", None)):
        preload()


@signals.worker_process_init.connect
def warm_child(**_: Any) -> None:
    if _tierflow_app(current_app):
        warm_runtime(current_app)


@signals.worker_ready.connect
def warm_single_process(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    pool = getattr(sender, "pool", None)
    if _tierflow_app(app) and not type(pool).__module__.endswith("prefork"):
        warm_runtime(app)
