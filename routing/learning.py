"""The learned part of a policy, and the small pure functions that turn its scores into choices.

Owns `LearnedRouting` (per job class: a scorer per tier for P(good | prompt), the
cascade scorer for P(good | prompt, cheaper answer), and the thresholds that turn
their scores into a first tier and an accept-or-escalate), `RoutingTarget` (keep
X of the best tier's quality, or send at most Y of jobs above the cheapest tier),
and the calibration that picks a threshold for a target from scored rows.

Scoring is kept apart from deciding: `tier_probabilities` returns numbers;
`first_tier` and `cascade_escalates` compare them with the policy's thresholds.

Pure: numpy and pydantic only.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tierflow.routing.scorers import CHEAP_FEATURES, LogisticScorer, Vector
from tierflow.routing.states import Tier


class TargetKind(str, Enum):
    QUALITY = "quality"  # keep at least `value` of the best tier's quality, at least cost
    COST = "cost"  # send at most `value` of jobs above the cheapest tier, at best quality


class RoutingTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TargetKind = TargetKind.QUALITY
    value: float = Field(default=0.95, ge=0, le=1)

    def describe(self) -> str:
        if self.kind is TargetKind.QUALITY:
            return f"keep {self.value:.0%} of the best tier's quality"
        return f"at most {self.value:.0%} of jobs above the cheapest tier"


class LearningSettings(BaseModel):
    """How `reflect` may change a policy: its target and its guardrails."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: RoutingTarget = RoutingTarget()
    min_samples: int = Field(default=50, ge=2)  # rows of a class (and of a tier) before it learns
    max_share_step: float = Field(default=0.2, gt=0, le=1)  # most a run may move the share routed up
    rollback_tolerance: float = Field(default=0.05, ge=0, le=1)  # success drop that undoes a version
    min_version_samples: int = Field(default=30, ge=1)  # judged jobs of a version before it is judged
    encoder: Literal["local", "openai"] | None = None  # the embedding the features include; None: none
    # A cheaper tier is never the first one when its P(good) is below this: it would escalate anyway.
    min_start_probability: float = Field(default=0.05, ge=0, le=1)
    # This share of first attempts start where an outcome is missing (routing.decision.exploration); 0: none.
    explore_share: float = Field(default=0.05, ge=0, le=0.5)
    coach_model: str | None = Field(default=None, pattern=r"^[\w.-]+:.+$")  # "provider:model"; None: no coach
    # Per kind, the graded quality (routing/grades.py) an answer must reach to count as good: the
    # scorers then estimate P(reaching it); a kind not named: they estimate the expected quality.
    quality_bar: dict[str, float] = Field(default_factory=dict)


class LearnedRouting(BaseModel):
    """One job class's learned routing, as a policy version stores it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoder: str | None
    tiers: dict[Tier, LogisticScorer]  # P(the tier's answer is good | prompt features)
    gain_threshold: float  # start above a tier when a tier above is this much likelier to be good
    cascade: LogisticScorer | None = None  # P(a cheaper tier's answer is good | prompt, answer)
    escalate_gain: float = 1.0  # escalate an answer when the top tier is this much likelier good
    samples: int = 0

    @property
    def width(self) -> int:
        return next(iter(self.tiers.values())).width if self.tiers else 0


def tier_probabilities(
    learned: LearnedRouting, features: Vector, ladder: tuple[Tier, ...]
) -> dict[Tier, float]:
    """P(good) per tier that has a scorer, in ladder order."""
    return {
        tier: float(learned.tiers[tier].probability(features)[0]) for tier in ladder if tier in learned.tiers
    }


def first_tier(
    probabilities: dict[Tier, float], gain_threshold: float, min_probability: float = 0.0
) -> tuple[Tier, str] | None:
    """The cheapest scored tier that no tier above beats by `gain_threshold` and whose P(good)
    reaches `min_probability` (else the top scored tier), and why; None when no tier is scored.

    The floor matters because a job started where it will almost surely fail is escalated
    anyway: it costs the failed attempt on top, and time.
    """
    tiers = list(probabilities)
    shown = ", ".join(f"{t.value} {p:.2f}" for t, p in probabilities.items())
    for position, tier in enumerate(tiers[:-1]):
        gain = max(probabilities[u] - probabilities[tier] for u in tiers[position + 1 :])
        if gain < gain_threshold and probabilities[tier] >= min_probability:
            return (
                tier,
                f"learned P(good): {shown}; gain above {tier.value} {gain:.2f} < {gain_threshold:.2f}",
            )
    if not tiers:
        return None
    return tiers[-1], f"learned P(good): {shown}; no cheaper tier is both close enough and likely enough"


def cascade_gain(learned: LearnedRouting, prompt: Vector, answer: Vector, top: Tier) -> float | None:
    """How much likelier the top tier's answer is good than this cheaper answer; None if unscored."""
    if learned.cascade is None or top not in learned.tiers:
        return None
    p_answer = float(learned.cascade.probability(cascade_features(prompt, answer))[0])
    p_top = float(learned.tiers[top].probability(prompt)[0])
    return p_top - p_answer


def cascade_features(prompt: Vector, answer: Vector) -> Vector:
    """What the cascade scorer sees: the prompt's cheap features (not its embedding) and the answer's."""
    return np.concatenate([prompt[..., : len(CHEAP_FEATURES)], answer], axis=-1)


def routed_up_count(gains: Vector, cheap_good: Vector, best_good: Vector, target: RoutingTarget) -> int:
    """How many of the rows (largest gain first) must go up to meet the target, by the estimates."""
    n = gains.shape[0]
    if n == 0:
        return 0
    if target.kind is TargetKind.COST:
        return int(np.floor(target.value * n + 1e-9))
    order = np.argsort(-gains, kind="stable")
    expected = float(cheap_good.sum()) + np.concatenate(([0.0], np.cumsum(gains[order])))
    goal = target.value * float(best_good.sum())
    reached = np.flatnonzero(expected >= goal - 1e-9)
    return int(reached[0]) if reached.size else int(np.argmax(expected))


def threshold_for_count(gains: Vector, count: int, whole_ties: bool = True) -> float:
    """A gain threshold halfway between distinct gains that sends about the `count` largest up.

    Equal gains cannot be split: the cut moves past their group (`whole_ties`: all go up)
    or before it (none of them go up), so the threshold never sits on a scored value.
    """
    ranked = np.sort(gains)[::-1]
    if ranked.size == 0:
        return 1.0
    count = min(max(count, 0), ranked.size)
    if 0 < count < ranked.size and ranked[count - 1] == ranked[count]:
        tied = np.flatnonzero(ranked == ranked[count - 1])
        count = int(tied[-1]) + 1 if whole_ties else int(tied[0])
    if count == 0:
        return float(ranked[0] + 1e-6)
    if count == ranked.size:
        return float(ranked[-1] - 1e-6)
    return float((ranked[count - 1] + ranked[count]) / 2)


def calibrate(
    cheap_good: Vector,
    best_good: Vector,
    target: RoutingTarget,
    current_share: float | None = None,
    max_share_step: float = 1.0,
) -> tuple[float, float]:
    """The gain threshold meeting `target` on these rows, and the share of rows it routes up.

    With `current_share` (the share routed up today) the new share stays within
    `max_share_step` of it: one run moves at most that many jobs.

    Args:
        cheap_good: estimated P(good) of the cheaper choice, per row.
        best_good: estimated P(good) of the better choice, per row.
    """
    gains = np.asarray(best_good - cheap_good, dtype=np.float64)
    n = gains.shape[0]
    count = routed_up_count(gains, cheap_good, best_good, target)
    if current_share is not None and n:
        was, step = round(current_share * n), int(np.floor(max_share_step * n))
        count = min(max(count, was - step), was + step)
    threshold = threshold_for_count(gains, count, whole_ties=target.kind is TargetKind.QUALITY)
    return threshold, (float(np.mean(gains >= threshold)) if n else 0.0)
