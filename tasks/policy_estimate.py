"""Off-policy estimates of a policy version from the store: reflect's gate and `tierflow eval policy`.

Glue only: the learner's rows (`tasks.features.outcome_rows`) and the first decisions
(`store.decisions`) go into `routing.policy_estimate`, which does the arithmetic.
"""

from __future__ import annotations

from datetime import datetime

from tierflow.routing.policy import Policy
from tierflow.routing.policy_estimate import (
    LoggedJob,
    PolicyEstimate,
    estimate_policy,
    logged_jobs,
    publish_check,
)
from tierflow.routing.reflect import OutcomeRow, Reflection
from tierflow.store.db import transaction
from tierflow.store.decisions import first_decisions
from tierflow.store.outcomes import judged_attempts
from tierflow.tasks.features import outcome_rows
from tierflow.tasks.runtime import Runtime


def logged_from_rows(
    runtime: Runtime, rows: list[OutcomeRow], since: datetime | None = None
) -> tuple[list[LoggedJob], int]:
    """The logged jobs behind `rows` (created since `since`), and how many lack a propensity."""
    with transaction(runtime.sessions) as session:
        firsts = first_decisions(session, sorted({row.job_id for row in rows}), since)
    return logged_jobs([row for row in rows if row.job_id in firsts], firsts, runtime.kinds)


def off_policy_gate(
    runtime: Runtime, parent: Policy, reflection: Reflection, rows: list[OutcomeRow]
) -> Reflection:
    """reflect's proposal, kept only if its off-policy estimate passes `publish_check`; the
    estimate goes into its statistics (`off_policy`) and its text either way. Rollbacks pass."""
    if reflection.policy is None or reflection.rollback_to is not None:
        return reflection
    jobs, missing = logged_from_rows(runtime, rows)
    candidate = estimate_policy(reflection.policy, jobs, missing) if jobs else None
    logging = estimate_policy(parent, jobs, missing) if jobs else None
    settings = parent.learning
    check = publish_check(candidate, logging, settings.rollback_tolerance, settings.min_samples)
    statistics = {**reflection.statistics, "off_policy": {**check.statistics, "without_propensity": missing}}
    policy = None if check.passed is False else reflection.policy
    return Reflection(policy, None, statistics, f"{reflection.text} {check.text}")


def estimate_version(
    runtime: Runtime, candidate: Policy, since: datetime | None = None
) -> tuple[PolicyEstimate | None, int]:
    """The candidate's estimate on the last `reflect_window` judged attempts (those since `since`),
    and the number of jobs left out for want of a propensity; None when none is left."""
    with transaction(runtime.sessions) as session:
        records = judged_attempts(session, runtime.settings.reflect_window)
    rows = outcome_rows(runtime, candidate.learning.encoder, records, candidate.learning.quality_bar)
    jobs, missing = logged_from_rows(runtime, rows, since)
    return (estimate_policy(candidate, jobs, missing) if jobs else None), missing
