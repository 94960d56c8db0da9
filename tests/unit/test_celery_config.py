"""The Celery app derived from settings: explicit queues and the reliability settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tierflow.routing.errors import ConfigError
from tierflow.routing.states import Tier
from tierflow.worker.app import ALL_QUEUES, create_app
from tierflow.worker.cli_ops import THREADS_POOL_CONNECTIONS, pool_settings, worker_argv, worker_queues
from tierflow.worker.settings import load_settings


@pytest.fixture(scope="module")
def conf():  # type: ignore[no-untyped-def]
    settings = load_settings(
        broker_url="redis://127.0.0.1:6379/0",
        result_backend="redis://127.0.0.1:6379/0",
        visibility_timeout_s=1234,
        result_expires_hours=6,
    )
    return create_app(settings)


def test_queues_are_explicit_and_complete(conf) -> None:  # type: ignore[no-untyped-def]
    assert [q.name for q in conf.conf.task_queues] == list(ALL_QUEUES)
    assert set(ALL_QUEUES) == {"classify", "tier.small", "tier.medium", "tier.large", "maintenance"}
    assert conf.conf.task_create_missing_queues is False


def test_reliability_settings(conf) -> None:  # type: ignore[no-untyped-def]
    c = conf.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost and c.worker_deduplicate_successful_tasks
    assert c.worker_prefetch_multiplier == 1
    assert c.broker_transport_options["visibility_timeout"] == 1234
    assert c.result_backend_transport_options["visibility_timeout"] == 1234
    assert c.result_expires == timedelta(hours=6)


def test_only_the_chords_experts_keep_results(conf) -> None:  # type: ignore[no-untyped-def]
    ours = {name: task for name, task in conf.tasks.items() if name.startswith("tierflow.")}
    keep = {name for name, task in ours.items() if not task.ignore_result}
    assert keep == {"tierflow.expert"}  # the chord joins their results; its callback's, no one reads
    assert len(ours) == 8  # tierflow.judge (tasks/judging.py) among them


def test_worker_command_maps_to_celery_arguments() -> None:
    argv = worker_argv(worker_queues(None, [Tier.SMALL]), None, 64, None, "INFO", "small-1")
    assert argv[:5] == ["worker", "--queues", "tier.small", "--pool", "threads"]
    assert argv[-2:] == ["--concurrency", "64"] and "small-1@%h" in argv
    assert worker_argv(["classify"], None, None, None, "INFO", None)[4] == "threads"
    assert worker_argv(["classify"], None, None, "8,2", "INFO", None)[4] == "prefork", "it autoscales"
    assert worker_argv(["maintenance"], None, None, None, "INFO", None)[4] == "prefork"
    assert worker_queues("classify, maintenance", None) == ["classify", "maintenance"]


def test_a_worker_of_threads_keeps_fewer_connections_than_slots_and_prefork_one_per_slot() -> None:
    assert pool_settings(64, None, ["tier.small"]) == {"db_pool_size": THREADS_POOL_CONNECTIONS}
    assert pool_settings(8, None, ["tier.small"]) == {"db_pool_size": 8}
    assert pool_settings(64, "prefork", ["tier.small"]) == {"db_pool_size": 64}
    assert pool_settings(32, None, ["classify"]) == {"db_pool_size": THREADS_POOL_CONNECTIONS}
    assert pool_settings(32, None, ["maintenance"]) == {"db_pool_size": 32}
    assert pool_settings(32, None, ["classify"], autoscale=True) == {"db_pool_size": 32}
    assert pool_settings(0, None, ["tier.small"]) == {}


def test_worker_command_refuses_unknown_queues_and_impossible_autoscale() -> None:
    with pytest.raises(ConfigError, match="unknown queues tier.huge"):
        worker_queues("tier.huge", None)
    with pytest.raises(ConfigError, match="cannot autoscale"):
        worker_argv(["tier.small"], "threads", None, "8,2", "INFO", None)


def test_beat_runs_reflect_on_the_maintenance_queue_unless_disabled() -> None:
    from tierflow.worker.app import beat_schedule

    schedule = beat_schedule(load_settings(reflect_interval_s=120))
    assert schedule["reflect"]["task"] == "tierflow.reflect"
    assert schedule["reflect"]["schedule"] == 120
    assert schedule["reflect"]["options"] == {"queue": "maintenance", "expires": 120}
    assert "reflect" not in beat_schedule(load_settings(reflect_interval_s=0))
    assert "reconcile" in beat_schedule(load_settings(reflect_interval_s=0))
