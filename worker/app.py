"""The Celery application, built from Settings; its queues, routes and schedule.

Celery's configuration is derived from the settings, never the reverse. Nothing
is built at import time: call `create_app(settings)`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery, Task
from kombu.entity import Exchange, Queue
from sqlalchemy.exc import InterfaceError, OperationalError

from tierflow.routing.states import Tier
from tierflow.worker.logs import install as install_logging
from tierflow.worker.settings import Settings
from tierflow.worker.tracing import install as install_tracing

CLASSIFY_QUEUE = "classify"
MAINTENANCE_QUEUE = "maintenance"
TIER_QUEUES = tuple(tier.queue for tier in Tier)
ALL_QUEUES = (CLASSIFY_QUEUE, *TIER_QUEUES, MAINTENANCE_QUEUE)

TASK_MODULES = (
    "tierflow.tasks.classify",
    "tierflow.tasks.attempts",
    "tierflow.tasks.experts",
    "tierflow.tasks.aggregate",
    "tierflow.tasks.judging",
    "tierflow.tasks.reconcile",
    "tierflow.tasks.reflect",
    "tierflow.tasks.leases",
    "tierflow.tasks.warm",
)


def task_queues(settings: Settings) -> list[Queue]:
    """The queues, the same names on every broker. On RabbitMQ they are durable quorum queues
    (replicated, and their messages survive a broker restart) unless the setting turns them off;
    a topic exchange lets Celery's native delayed delivery hold countdowns in the broker."""
    if settings.broker_is_amqp and settings.broker_quorum_queues:
        exchange = Exchange("tierflow", type="topic", durable=True)
        arguments: dict[str, Any] | None = {"x-queue-type": "quorum"}
    else:
        exchange, arguments = Exchange("tierflow", type="direct"), None
    return [Queue(q, exchange, routing_key=q, durable=True, queue_arguments=arguments) for q in ALL_QUEUES]


def celery_config(settings: Settings) -> dict[str, Any]:
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    broker_transport = dict(transport)
    if settings.embedded:
        # kombu's virtual transports poll once a second by default: one second lost at every hop.
        broker_transport["polling_interval"] = 0.005
    if settings.broker_is_amqp:
        # Publisher confirms: a publish returns once RabbitMQ has taken the message.
        broker_transport = {"confirm_publish": True}
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_queues": task_queues(settings),
        "task_default_queue": CLASSIFY_QUEUE,
        "task_default_exchange": "tierflow",
        "task_default_exchange_type": task_queues(settings)[0].exchange.type,
        "task_default_routing_key": CLASSIFY_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": {
            "tierflow.classify": {"queue": CLASSIFY_QUEUE},
            "tierflow.reconcile": {"queue": MAINTENANCE_QUEUE},
            "tierflow.reflect": {"queue": MAINTENANCE_QUEUE},
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_deduplicate_successful_tasks": True,
        "broker_transport_options": broker_transport,
        "result_backend_transport_options": transport,
        "result_expires": timedelta(hours=settings.result_expires_hours),
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": beat_schedule(settings),
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """reconcile always; reflect unless its interval is 0. Each expires before its next run."""
    schedule: dict[str, dict[str, Any]] = {
        "reconcile": {
            "task": "tierflow.reconcile",
            "schedule": settings.reconcile_interval_s,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.reconcile_interval_s},
        },
    }
    if settings.reflect_interval_s > 0:
        schedule["reflect"] = {
            "task": "tierflow.reflect",
            "schedule": settings.reflect_interval_s,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.reflect_interval_s},
        }
    return schedule


class TierflowTask(Task):  # type: ignore[misc]
    """Every tierflow task: a database connection refused or dropped mid-task (a restarted
    PostgreSQL, `pg_terminate_backend`, a failover) retries the task with backoff instead of
    failing it. Safe because every task is idempotent: its writes are compare-and-set."""

    autoretry_for = (OperationalError, InterfaceError)
    retry_backoff = 1
    retry_backoff_max = 30
    retry_jitter = True
    max_retries = 8


class TierflowCelery(Celery):  # type: ignore[misc]
    """A Celery app that carries the settings it was built from."""

    tierflow_settings: Settings


def create_app(settings: Settings) -> TierflowCelery:
    app = TierflowCelery("tierflow", set_as_current=True, task_cls=TierflowTask)
    app.tierflow_settings = settings
    app.config_from_object(celery_config(settings))
    app.conf.include = list(TASK_MODULES)
    install_logging(settings)
    install_tracing(settings)
    for module in TASK_MODULES:
        __import__(module)
    return app
