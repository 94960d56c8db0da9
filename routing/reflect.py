"""Reflection: from judged outcomes to the next policy version, within the guardrails.

Owns `OutcomeRow` (one judged attempt: the job's class, the tier, whether its
answer was good, its features, cost and latency, and the policy version that
decided it), the statistics a version records, and `reflect`, which either
rolls the active version back (`compare_versions`: its jobs succeed less often
than its parent's, class by class, by more than the tolerance and by more than
chance explains), waits (too few samples), or fits the learned scorers
per job class, calibrates their thresholds to the policy's target, bounds the
step, and returns the next policy with a plain-language account of what changed.

The workers' `reflect` beat task and `tierflow eval routing --mode online` both
call this. Pure: numpy and pydantic only; it never opens a connection.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tierflow.routing.learning import LearnedRouting, LearningSettings, calibrate, cascade_features
from tierflow.routing.policy import Policy
from tierflow.routing.scorers import L2_GRID, LogisticScorer, Vector, constant_scorer, fit_scorer
from tierflow.routing.search_learning import StepOutcome, learn_orders
from tierflow.routing.states import Tier

# One-sided 95%: a drop in success smaller than this many standard errors is within chance.
ROLLBACK_Z = 1.645


@dataclass(frozen=True)
class OutcomeRow:
    """One judged attempt, as the learner sees it."""

    job_id: str
    kind: str  # the kind's name
    tier: Tier
    attempt: int
    good: bool
    features: Vector  # the prompt's features (routing.scorers.prompt_features)
    answer: Vector | None  # the answer's features (routing.answer_features), when it had one
    action: str  # the verdict: accept, escalate, needs_review, fail
    cost_usd: float = 0.0
    latency_s: float | None = None
    policy_version: int | None = None  # the version that decided the job's first attempt
    # What the scorers fit, on [0, 1] (routing.grades.learning_target); None: `good` as 0 or 1.
    quality: float | None = None
    source: str = "verdict"  # where the quality came from (routing.grades.GradeSource)

    @property
    def target(self) -> float:
        return float(self.good) if self.quality is None else self.quality


@dataclass(frozen=True)
class Reflection:
    """What a reflect run concluded."""

    policy: Policy | None  # the next version to publish; None: nothing to publish
    rollback_to: int | None  # publish this earlier version again instead
    statistics: dict[str, Any]
    text: str


def tier_statistics(rows: list[OutcomeRow]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Per job class and tier: rows, success, cost per success, escalation, review, latency p50."""
    groups: dict[tuple[str, Tier], list[OutcomeRow]] = defaultdict(list)
    for row in rows:
        groups[(row.kind, row.tier)].append(row)
    stats: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for (kind, tier), group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1].value)):
        good = sum(row.good for row in group)
        latencies = [row.latency_s for row in group if row.latency_s is not None]
        stats.setdefault(kind, {})[tier.value] = {
            "rows": len(group),
            "success_rate": round(good / len(group), 4),
            "cost_per_success_usd": round(sum(r.cost_usd for r in group) / good, 8) if good else None,
            "escalation_rate": round(sum(r.action == "escalate" for r in group) / len(group), 4),
            "review_rate": round(sum(r.action == "needs_review" for r in group) / len(group), 4),
            "latency_p50_s": round(float(np.median(latencies)), 3) if latencies else None,
        }
    return stats


def _last_answers(rows: list[OutcomeRow], version: int) -> dict[str, OutcomeRow]:
    """Per job whose first attempt `version` decided: its last judged attempt."""
    last: dict[str, OutcomeRow] = {}
    for row in rows:
        if row.policy_version == version and (
            row.job_id not in last or row.attempt > last[row.job_id].attempt
        ):
            last[row.job_id] = row
    return last


def version_success(rows: list[OutcomeRow], version: int) -> tuple[int, float]:
    """Jobs whose first attempt this version decided, and the share whose last judged answer was good."""
    last = _last_answers(rows, version)
    jobs = len(last)
    return jobs, (sum(row.good for row in last.values()) / jobs if jobs else 0.0)


@dataclass(frozen=True)
class VersionComparison:
    """A version's job success against its parent's, on the job classes both decided.

    The parent's rate is standardised to the version's mix of classes (each class's
    rate weighted by the version's share of jobs in it), so a version that happens to
    see more of a harder class is not blamed for it. `drop` is parent minus version;
    `standard_error` is the drop's, from both versions' counts per class.
    """

    jobs: int
    parent_jobs: int
    drop: float
    standard_error: float

    @property
    def beyond_chance(self) -> bool:
        return self.drop > ROLLBACK_Z * self.standard_error


def _rate_variance(good: int, jobs: int) -> float:
    """The variance of a success rate, with one success and one failure added to the counts
    so that a rate of 0 or 1 on few jobs is not taken as certain."""
    rate = (good + 1) / (jobs + 2)
    return rate * (1 - rate) / jobs


def _class_counts(rows: list[OutcomeRow], version: int) -> dict[str, tuple[int, int]]:
    """Per job class: how many of the version's jobs ended good, of how many."""
    counts: dict[str, tuple[int, int]] = {}
    for row in _last_answers(rows, version).values():
        good, jobs = counts.get(row.kind, (0, 0))
        counts[row.kind] = (good + row.good, jobs + 1)
    return counts


def compare_versions(rows: list[OutcomeRow], version: int, parent: int) -> VersionComparison:
    """How much less often `version`'s jobs succeed than `parent`'s, class by class."""
    mine, theirs = _class_counts(rows, version), _class_counts(rows, parent)
    shared = [kind for kind in mine if kind in theirs]
    jobs = sum(mine[kind][1] for kind in shared)
    drop = variance = 0.0
    for kind in shared:
        (good, n), (parent_good, parent_n) = mine[kind], theirs[kind]
        weight = n / jobs
        drop += weight * (parent_good / parent_n - good / n)
        variance += weight**2 * (_rate_variance(good, n) + _rate_variance(parent_good, parent_n))
    return VersionComparison(jobs, sum(theirs[kind][1] for kind in shared), drop, math.sqrt(variance))


def reflect(
    policy: Policy,
    parent: int | None,
    rows: list[OutcomeRow],
    encoder: str | None,
    kinds: Sequence[str] | None = None,
    steps: Sequence[StepOutcome] = (),
) -> Reflection:
    """The next step for the active `policy` (whose parent version is `parent`) given judged `rows`.

    Args:
        encoder: the embedding the rows' prompt features include (None: cheap features only).
        kinds: the kinds in force, in the registry's order; each is learned on its own rows alone,
            so a kind added or removed changes no other kind's scorers. None: the kinds of `rows`.
        steps: the judged strategy search steps, from which each search's order is learned
            (routing/search_learning.py).
    """
    settings = policy.learning
    stats: dict[str, Any] = {"tiers": tier_statistics(rows)}
    sources = Counter(row.source for row in rows)
    if set(sources) - {"verdict"}:  # where the graded outcomes came from (routing/grades.py)
        stats["grades"] = dict(sorted(sources.items()))
    jobs, success = version_success(rows, policy.version)
    stats["version"] = {"jobs": jobs, "success_rate": round(success, 4)}
    if parent is not None:
        parent_jobs, parent_success = version_success(rows, parent)
        stats["parent"] = {"version": parent, "jobs": parent_jobs, "success_rate": round(parent_success, 4)}
        compared = compare_versions(rows, policy.version, parent)
        stats["comparison"] = {
            "drop": round(compared.drop, 4),
            "standard_error": round(compared.standard_error, 4),
        }
        enough = min(compared.jobs, compared.parent_jobs) >= settings.min_version_samples
        if enough and compared.drop > settings.rollback_tolerance and compared.beyond_chance:
            text = (
                f"Version {policy.version} succeeded on {success:.0%} of {jobs} jobs against "
                f"{parent_success:.0%} of {parent_jobs} under version {parent}: class by class a drop "
                f"of {compared.drop:.1%} (standard error {compared.standard_error:.1%}), beyond the "
                f"tolerance of {settings.rollback_tolerance:.0%} and beyond chance: rolling back to "
                f"version {parent}."
            )
            return Reflection(None, parent, stats, text)
        if jobs < settings.min_version_samples and policy.learned:
            needs = settings.min_version_samples
            text = f"Version {policy.version} has judged {jobs} jobs; it needs {needs} before a change."
            return Reflection(None, None, stats, text)
    learned, notes = dict(policy.learned), []
    for kind in kinds if kinds is not None else sorted({row.kind for row in rows}):
        mine = [row for row in rows if row.kind == kind]
        change, note = learn_kind(kind, mine, policy, encoder)
        notes.append(note)
        if change is not None:
            learned[kind] = change
    search, search_notes = learn_orders(policy.search, steps, settings.min_samples)
    notes += search_notes
    if learned == policy.learned and search == policy.search:
        return Reflection(None, None, stats, " ".join(notes))
    update = {"learned": learned, "search": search}
    return Reflection(policy.model_copy(update=update), None, stats, " ".join(notes))


def learn_kind(
    kind: str, rows: list[OutcomeRow], policy: Policy, encoder: str | None
) -> tuple[LearnedRouting | None, str]:
    """One job class's learned routing from its rows, or None and why not."""
    settings = policy.learning
    if len(rows) < settings.min_samples:
        return (
            None,
            f"{kind}: {len(rows)} judged attempts, fewer than {settings.min_samples}; unchanged.",
        )
    current = policy.learned.get(kind)
    scorers = tier_scorers(rows, policy.ladder, settings, current)
    if len(scorers) < 2:
        return (
            None,
            f"{kind}: fewer than two tiers with {settings.min_samples} outcomes; unchanged.",
        )
    cascade = cascade_scorer(rows, list(scorers)[-1], settings, current)
    fitted = LearnedRouting(
        encoder=encoder, tiers=scorers, gain_threshold=1.0, cascade=cascade, samples=len(rows)
    )
    return calibrate_kind(kind, rows, fitted, settings, current)


def calibrate_kind(
    kind: str,
    rows: list[OutcomeRow],
    fitted: LearnedRouting,
    settings: LearningSettings,
    current: LearnedRouting | None,
) -> tuple[LearnedRouting, str]:
    """`fitted`'s thresholds calibrated to the target on `rows`, each moved at most the step from
    where `current` (or, without one, today's routing) sends jobs; and what changed, in words."""
    tiers = list(fitted.tiers)
    features = np.vstack([row.features for row in _first_attempts(rows)])
    cheap = fitted.tiers[tiers[0]].probability(features)
    best = np.max(np.vstack([fitted.tiers[t].probability(features) for t in tiers[1:]]), axis=0)
    if current is None:
        was = _share_up(rows, tiers[0])
    else:
        was = float(np.mean(best - cheap >= current.gain_threshold))
    threshold, share = calibrate(cheap, best, settings.target, was, settings.max_share_step)
    escalate_gain, cascade_note = 1.0, ""
    if fitted.cascade is not None:
        escalate_gain, cascade_note = _calibrate_cascade(rows, fitted, tiers[-1], settings, current)
    rates = ", ".join(f"{t.value} {np.mean([r.good for r in rows if r.tier is t]):.0%}" for t in tiers)
    note = (
        f"{kind}: {len(rows)} judged attempts (success {rates}); to {settings.target.describe()} "
        f"the first tier is above {tiers[0].value} for {share:.0%} of jobs (was {was:.0%}, "
        f"step at most {settings.max_share_step:.0%}).{cascade_note}"
    )
    return fitted.model_copy(update={"gain_threshold": threshold, "escalate_gain": escalate_gain}), note


def _grid(current: LogisticScorer | None, rows: int) -> tuple[float, ...]:
    """The penalties to try: the last one chosen while the rows have not doubled since, else all."""
    if current is not None and current.l2 > 0 and rows < 2 * current.rows:
        return (current.l2,)
    return L2_GRID


def tier_scorers(
    rows: list[OutcomeRow],
    ladder: tuple[Tier, ...],
    settings: LearningSettings,
    current: LearnedRouting | None = None,
) -> dict[Tier, LogisticScorer]:
    """P(good | prompt) per tier with enough rows, in ladder order (a constant where all agree).

    Each row's target is its graded quality where it has one (OutcomeRow.target), else 0 or 1."""
    scorers: dict[Tier, LogisticScorer] = {}
    for tier in ladder:
        mine = [row for row in rows if row.tier is tier]
        if len(mine) < settings.min_samples:
            continue
        targets = np.array([row.target for row in mine], dtype=np.float64)
        features = np.vstack([row.features for row in mine])
        if np.ptp(targets) > 0:
            last = current.tiers.get(tier) if current is not None else None
            scorers[tier] = fit_scorer(features, targets, _grid(last, len(mine)))
        else:
            scorers[tier] = constant_scorer(features.shape[1], float(targets.sum()), len(targets))
    return scorers


def _cheaper_answers(rows: list[OutcomeRow], top: Tier) -> list[OutcomeRow]:
    return [row for row in rows if row.tier is not top and row.answer is not None]


def cascade_scorer(
    rows: list[OutcomeRow], top: Tier, settings: LearningSettings, current: LearnedRouting | None
) -> LogisticScorer | None:
    """P(a cheaper answer is good | prompt's cheap features, answer), if learnable."""
    cheaper = _cheaper_answers(rows, top)
    labels = np.array([row.target for row in cheaper], dtype=np.float64)
    if len(cheaper) < settings.min_samples or not np.ptp(labels) > 0:
        return None
    joined = np.vstack(
        [cascade_features(row.features, row.answer) for row in cheaper if row.answer is not None]
    )
    last = current.cascade if current is not None else None
    return fit_scorer(joined, labels, _grid(last, len(cheaper)))


def _calibrate_cascade(
    rows: list[OutcomeRow],
    fitted: LearnedRouting,
    top: Tier,
    settings: LearningSettings,
    current: LearnedRouting | None,
) -> tuple[float, str]:
    """The escalation gain meeting the target on the cheaper answers, within the step."""
    assert fitted.cascade is not None
    cheaper = _cheaper_answers(rows, top)
    joined = np.vstack(
        [cascade_features(row.features, row.answer) for row in cheaper if row.answer is not None]
    )
    answer_good = fitted.cascade.probability(joined)
    top_good = fitted.tiers[top].probability(np.vstack([row.features for row in cheaper]))
    if current is not None and current.cascade is not None:
        was = float(np.mean(top_good - answer_good >= current.escalate_gain))
    else:
        was = float(np.mean([row.action == "escalate" for row in cheaper]))
    gain, share = calibrate(answer_good, top_good, settings.target, was, settings.max_share_step)
    return gain, f" The cascade scorer would escalate {share:.0%} of cheaper answers (was {was:.0%})."


def _first_attempts(rows: list[OutcomeRow]) -> list[OutcomeRow]:
    return [row for row in rows if row.attempt == 1] or rows


def _share_up(rows: list[OutcomeRow], cheapest: Tier) -> float:
    """The share of jobs whose first attempt started above the cheapest scored tier."""
    first = _first_attempts(rows)
    return float(np.mean([row.tier is not cheapest for row in first])) if first else 0.0
