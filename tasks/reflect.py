"""reflect (queue `maintenance`, run by beat): learn the next routing policy version from outcomes.

Reads the recent judged attempts, computes their features outside any
transaction, asks `routing.reflect` what to do, keeps a new version only if its
off-policy estimate on the logged decisions passes (`tasks.policy_estimate`),
then publishes in one transaction under the publishing lock: a new version (with the statistics it saw
and its reflection), a rollback to the parent, or nothing. If another version
became active meanwhile, nothing is published: the next run sees the new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery import shared_task

from tierflow.routing.policy import Policy
from tierflow.routing.reflect import Reflection, reflect
from tierflow.routing.search_learning import StepOutcome
from tierflow.store.db import transaction
from tierflow.store.outcomes import judged_attempts
from tierflow.store.policies import (
    active_version,
    lock_publishing,
    publish_policy,
    rollback_policy,
    seed_policy,
)
from tierflow.tasks.coaching import coach_reflection
from tierflow.tasks.features import outcome_rows
from tierflow.tasks.policy_estimate import off_policy_gate
from tierflow.tasks.runtime import Runtime, default_policy, runtime_for
from tierflow.worker.run_counts import count_reflect_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReflectRun:
    """What one run did: the version it started from, the one it published (if any), and why."""

    from_version: int
    published: int | None
    rolled_back_to: int | None
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "from_version": self.from_version,
            "published": self.published,
            "rolled_back_to": self.rolled_back_to,
            "reflection": self.text,
        }


@shared_task(name="tierflow.reflect", bind=True, ignore_result=True)
def reflect_task(self: Any) -> dict[str, Any]:
    runtime = runtime_for(self.app)
    run = run_reflect(runtime)
    count_reflect_run(runtime.settings, run.published is not None)
    log.info("reflect from version %s: published %s. %s", run.from_version, run.published, run.text)
    return run.as_dict()


def run_reflect(runtime: Runtime) -> ReflectRun:
    """One reflect run against the store."""
    with transaction(runtime.sessions) as session:
        row = active_version(session)
        if row is None:
            seed_policy(session, default_policy(runtime.settings))
            row = active_version(session)
        assert row is not None
        policy, parent = Policy.model_validate(row.body), row.parent
        records = judged_attempts(session, runtime.settings.reflect_window)
    encoder = policy.learning.encoder
    rows = outcome_rows(runtime, encoder, records, policy.learning.quality_bar)
    steps = [
        StepOutcome(str(r.search["key"]), str(r.search["step"]), r.good, r.cost_usd)
        for r in records
        if r.search
    ]
    reflection = reflect(policy, parent, rows, encoder, runtime.kinds.names, steps)
    reflection = coach_reflection(runtime, policy, reflection, records)
    reflection = off_policy_gate(runtime, policy, reflection, rows)
    published = _publish(runtime, policy.version, reflection)
    if published is not None:
        runtime.forget_policy()
    return ReflectRun(
        policy.version, published, reflection.rollback_to if published else None, reflection.text
    )


def _publish(runtime: Runtime, seen: int, reflection: Reflection) -> int | None:
    if reflection.policy is None and reflection.rollback_to is None:
        return None
    with transaction(runtime.sessions) as session:
        lock_publishing(session)
        now = active_version(session)
        if now is None or now.version != seen:
            log.info("reflect: version %s became active meanwhile; nothing published", now and now.version)
            return None
        if reflection.rollback_to is not None:
            statistics = dict(reflection.statistics)
            return rollback_policy(session, reflection.rollback_to, reflection.text, statistics).version
        assert reflection.policy is not None
        published = publish_policy(
            session, reflection.policy, "reflect", dict(reflection.statistics), reflection.text
        )
        return published.version
