"""Embedded mode: a Celery worker on threads inside the `tierflow` process.

With the in-memory broker nothing outlives the process, so jobs that a previous
process left unfinished in the database are sent again when the worker starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tierflow.store.models import utcnow
from tierflow.store.schema import upgrade
from tierflow.tasks.reconcile import requeue_stale
from tierflow.tasks.runtime import Runtime
from tierflow.worker.app import ALL_QUEUES


@contextmanager
def embedded_worker(app: Any, runtime: Runtime) -> Iterator[None]:
    """Migrate the database, start a worker thread on every queue, stop it at the end."""
    from celery.contrib.testing.worker import start_worker

    upgrade(runtime.engine)
    settings = runtime.settings
    with start_worker(
        app,
        pool="threads",
        concurrency=settings.embedded_concurrency,
        loglevel=settings.log_level,
        perform_ping_check=False,
        shutdown_timeout=60.0,
        queues=list(ALL_QUEUES),
    ):
        requeue_stale(app, runtime, utcnow(), everything=True)
        yield
