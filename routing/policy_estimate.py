"""A candidate policy's figures estimated from logged decisions, before it serves: OPE on jobs.

Owns `LoggedJob` (one job as logged: its first tier and that tier's propensity, the
analysis and prompt features the decision saw, whether the job ended well and what
all its attempts cost), `logged_jobs` (built from the learner's rows and the first
decisions), `estimate_policy` (the candidate's success, cost per job and share per
first tier by `routing.ope`, beside what the logging policies observed) and
`publish_check`, reflect's gate (the paired DR difference from the parent).

The action is the first tier (small, medium, large): the candidate's probability of
each comes from `routing.decision.first_tier_choices` on the logged analysis and
features, so it explores as it would. The outcome is the job's (after the judge's
escalations), success and cost. The doubly robust outcome model for success is the
candidate's own scorers, P(good | prompt, tier), where it has one for the tier and
the class; elsewhere, and for cost, the tier's mean over the logged jobs. A job
whose first decision has no propensity is left out and counted.

Pure: numpy and routing only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import first_tier_choices
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry
from tierflow.routing.kinds.spec import KindSpec
from tierflow.routing.learning import tier_probabilities
from tierflow.routing.ope import (
    Estimate,
    Estimator,
    LoggedStream,
    doubly_robust_difference,
    effective_rows,
    estimate_all,
)
from tierflow.routing.policy import Policy
from tierflow.routing.reflect import OutcomeRow
from tierflow.routing.scorers import Vector
from tierflow.routing.states import TIER_LADDER, Tier

GATE_ESTIMATOR = Estimator.DR
LEVEL = 0.9  # two-sided: the lower bound is one-sided 95%
# Beyond this share of jobs started where the logging policy never could, only the outcome model
# speaks for the candidate: the gate does not judge it (the online rollback still does).
MAX_UNSUPPORTED_SHARE = 0.1


@dataclass(frozen=True)
class LoggedJob:
    job_id: str
    kind: KindSpec
    analysis: Analysis
    features: Vector | None
    tier: Tier  # the first attempt's
    propensity: float
    success: float  # 1 / 0: the job's last judged attempt was good
    cost_usd: float  # every attempt's
    policy_version: int | None


@dataclass(frozen=True)
class FirstDecision:
    """What the store kept of a job's first decision."""

    propensity: float | None
    analysis: dict[str, Any] | None


def logged_jobs(
    rows: list[OutcomeRow], firsts: dict[str, FirstDecision], kinds: KindRegistry | None = None
) -> tuple[list[LoggedJob], int]:
    """One `LoggedJob` per job whose first attempt is among `rows`, and how many were left out
    for want of a propensity, an analysis or a kind still declared."""
    kinds = kinds or builtin_registry()
    by_job: dict[str, list[OutcomeRow]] = defaultdict(list)
    for row in rows:
        by_job[row.job_id].append(row)
    jobs, missing = [], 0
    for job_id, attempts in by_job.items():
        attempts.sort(key=lambda row: row.attempt)
        first, first_decision = attempts[0], firsts.get(job_id)
        if first.attempt != 1:
            continue  # its first attempt fell out of the window
        unknown = first.kind not in kinds
        if (
            unknown
            or first_decision is None
            or first_decision.propensity is None
            or not first_decision.analysis
        ):
            missing += 1
            continue
        jobs.append(
            LoggedJob(
                job_id=job_id,
                kind=kinds.get(first.kind),
                analysis=Analysis.from_dict(first_decision.analysis),
                features=first.features,
                tier=first.tier,
                propensity=first_decision.propensity,
                success=1.0 if attempts[-1].good else 0.0,
                cost_usd=sum(row.cost_usd for row in attempts),
                policy_version=first.policy_version,
            )
        )
    return jobs, missing


@dataclass(frozen=True)
class PolicyEstimate:
    """A policy's estimated figures on logged jobs, and what the logging policies observed."""

    version: int
    rows: int
    without_propensity: int
    unsupported: int  # jobs the candidate starts where the logging policy never could
    effective_rows: float
    success: dict[Estimator, Estimate]
    cost: dict[Estimator, Estimate]
    shares: dict[str, float]
    logged: dict[str, Any] = field(default_factory=dict)
    stream: LoggedStream | None = field(default=None, compare=False, repr=False)  # success, for pairing

    @property
    def gate(self) -> Estimate:
        return self.success[GATE_ESTIMATOR]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rows": self.rows,
            "without_propensity": self.without_propensity,
            "unsupported": self.unsupported,
            "effective_rows": round(self.effective_rows, 1),
            "success": {e.value: estimate.as_dict() for e, estimate in self.success.items()},
            "cost_per_job_usd": {e.value: estimate.as_dict() for e, estimate in self.cost.items()},
            "shares": self.shares,
            "logged": self.logged,
        }


def _tier_means(jobs: list[LoggedJob], value: str) -> dict[Tier, float]:
    overall = float(np.mean([getattr(job, value) for job in jobs]))
    means = {}
    for tier in TIER_LADDER:
        seen = [getattr(job, value) for job in jobs if job.tier is tier]
        means[tier] = float(np.mean(seen)) if seen else overall
    return means


def _predicted_success(candidate: Policy, job: LoggedJob, means: dict[Tier, float]) -> list[float]:
    learned = candidate.learned.get(job.kind.name)
    scored: dict[Tier, float] = {}
    if learned is not None and job.features is not None and job.features.shape == (learned.width,):
        scored = tier_probabilities(learned, job.features, candidate.ladder)
    return [scored.get(tier, means[tier]) for tier in TIER_LADDER]


def _choices(candidate: Policy, job: LoggedJob) -> list[float]:
    ctx = DecisionContext(job_id=job.job_id, prompt_features=job.features)
    choices = first_tier_choices(job.kind, job.analysis, candidate, ctx)
    return [choices.get(tier, 0.0) for tier in TIER_LADDER]


def observed(jobs: list[LoggedJob]) -> dict[str, Any]:
    """What the logging policies achieved on these jobs."""
    return {
        "success": float(np.mean([job.success for job in jobs])),
        "cost_per_job_usd": float(np.mean([job.cost_usd for job in jobs])),
        "shares": {t.value: float(np.mean([job.tier is t for job in jobs])) for t in TIER_LADDER},
        "versions": sorted({job.policy_version for job in jobs if job.policy_version is not None}),
    }


def estimate_policy(
    candidate: Policy, jobs: list[LoggedJob], without_propensity: int = 0, level: float = LEVEL
) -> PolicyEstimate:
    """The candidate's success, cost per job and first-tier shares on `jobs` (see the module docstring).

    Raises:
        ValueError: no jobs.
    """
    if not jobs:
        raise ValueError("no logged jobs with a propensity to estimate from")
    chosen = np.array([TIER_LADDER.index(job.tier) for job in jobs], dtype=np.intp)
    target = np.array([_choices(candidate, job) for job in jobs], dtype=np.float64)
    success_means, cost_means = _tier_means(jobs, "success"), _tier_means(jobs, "cost_usd")
    stream = LoggedStream(
        chosen,
        np.array([job.propensity for job in jobs], dtype=np.float64),
        np.array([job.success for job in jobs], dtype=np.float64),
        target,
        np.array([_predicted_success(candidate, job, success_means) for job in jobs], dtype=np.float64),
    )
    cost_model = np.tile([cost_means[tier] for tier in TIER_LADDER], (len(jobs), 1))
    costs = stream.with_outcome(np.array([job.cost_usd for job in jobs], dtype=np.float64), cost_model)
    certain = stream.propensity >= 1.0
    unsupported = int(np.sum(certain & (target[np.arange(len(jobs)), chosen] < 1.0)))
    return PolicyEstimate(
        version=candidate.version,
        rows=len(jobs),
        without_propensity=without_propensity,
        unsupported=unsupported,
        effective_rows=effective_rows(stream),
        success=estimate_all(stream, level),
        cost=estimate_all(costs, level),
        shares={
            tier.value: float(share) for tier, share in zip(TIER_LADDER, target.mean(axis=0), strict=True)
        },
        logged=observed(jobs),
        stream=stream,
    )


@dataclass(frozen=True)
class PublishCheck:
    """reflect's off-policy gate: None = not estimated (too few logged jobs), else passed or not."""

    passed: bool | None
    text: str
    statistics: dict[str, Any]


def publish_check(
    candidate: PolicyEstimate | None, parent: PolicyEstimate | None, tolerance: float, min_rows: int
) -> PublishCheck:
    """Publish only if the candidate's success minus the parent's, estimated on the same logged
    jobs (DR, paired), is not below -`tolerance` at its interval's lower bound. Not estimated
    (None): fewer than `min_rows` logged jobs, or more than `MAX_UNSUPPORTED_SHARE` of them
    started by the candidate on a tier their logging policy could not have chosen."""
    if candidate is None or parent is None or candidate.rows < min_rows:
        rows = 0 if candidate is None else candidate.rows
        text = f"off-policy estimate: {rows} logged jobs with a propensity (< {min_rows}): not estimated"
        return PublishCheck(None, text, {"rows": rows, "estimated": False})
    if candidate.unsupported > MAX_UNSUPPORTED_SHARE * candidate.rows:
        text = (
            f"off-policy estimate: the candidate starts {candidate.unsupported} of {candidate.rows} logged "
            "jobs on a tier their policy could not have chosen (nothing explored there): not estimated"
        )
        return PublishCheck(
            None, text, {"rows": candidate.rows, "unsupported": candidate.unsupported, "estimated": False}
        )
    if candidate.stream is None or parent.stream is None:
        raise ValueError("the estimates were made without their logged rows")
    change = doubly_robust_difference(candidate.stream, parent.stream, candidate.gate.level)
    passed = change.low >= -tolerance
    text = (
        f"off-policy estimate ({GATE_ESTIMATOR.value}, {candidate.rows} logged jobs): success "
        f"{candidate.gate.value:.3f} [{candidate.gate.low:.3f}, {candidate.gate.high:.3f}] against the "
        f"parent's {parent.gate.value:.3f}, a change of {change.value:+.3f} [{change.low:+.3f}, "
        f"{change.high:+.3f}]; cost per job ${candidate.cost[GATE_ESTIMATOR].value:.6f} against "
        f"${parent.cost[GATE_ESTIMATOR].value:.6f}; "
        + ("within" if passed else "beyond")
        + f" the tolerance of {tolerance:.0%}"
        + ("" if passed else ": not published")
    )
    statistics = {
        "estimated": True,
        "passed": passed,
        "tolerance": tolerance,
        "change": change.as_dict(),
        "candidate": candidate.as_dict(),
        "parent": parent.as_dict(),
    }
    return PublishCheck(passed, text, statistics)
