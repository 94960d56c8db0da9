"""Routing quality as the RouteLLM paper measures it: the threshold sweep, PGR, APGR and CPT.

Owns the pure arithmetic of `tierflow eval routing`: given per-prompt outcomes of
the small and the large tier (correct or not, or a graded score, and what the call
would cost) and a
router's score per prompt (higher = send to large), trace accuracy and cost
against the share of large-tier calls, and summarise that curve.

Definitions (../shared/data/README.md, arXiv 2406.18665):

- The sweep sends the prompts with the highest scores to large. A threshold cannot
  split prompts of equal score, so the curve has one point per distinct cut: 0%
  large, then after every group of tied scores, ending at 100% large.
- PGR(acc) = (acc - small_acc) / (large_acc - small_acc); None when the two tiers
  are equally accurate (no gap to recover). For a graded file acc is the mean score,
  as RouteLLM evaluates MT-Bench.
- APGR is the area under PGR against large share from 0 to 1, by the trapezoid
  rule over every swept point. Between two points the curve is the straight line:
  exactly the expected curve when ties are broken at random, so a router that
  ignores the prompt (a constant score) scores 0.5, as random does.
- CPT(x) and the 95%-quality point read the same piecewise-linear curve: the
  smallest share at which it reaches the target, interpolated inside the segment
  that first crosses it (consistent with the trapezoid).

Must not import anything but numpy and the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

_EPSILON = 1e-12  # accuracies are ratios of counts: a target met exactly must count as met


@dataclass(frozen=True)
class PromptOutcomes:
    """Per prompt: each tier's quality and what each tier's call costs (USD).

    Quality is 1 or 0 (right or wrong), or for a graded file the score in its own units
    (say a judge's 1 to 10); `floor` is the bottom of that scale (0 for correctness), from
    which "95% of the large tier's quality" is measured. The `accuracy` figures are mean
    qualities: accuracy for correctness, the mean score for a graded file.
    """

    small_quality: NDArray[np.float64]
    large_quality: NDArray[np.float64]
    small_cost: NDArray[np.float64]
    large_cost: NDArray[np.float64]
    floor: float = 0.0
    graded: bool = False

    def __post_init__(self) -> None:  # right / wrong may be given as booleans
        for name in ("small_quality", "large_quality"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))

    @property
    def n(self) -> int:
        return int(self.small_quality.shape[0])

    @property
    def small_accuracy(self) -> float:
        return float(np.mean(self.small_quality)) if self.n else 0.0

    @property
    def large_accuracy(self) -> float:
        return float(np.mean(self.large_quality)) if self.n else 0.0


@dataclass(frozen=True)
class CurvePoint:
    large_share: float
    accuracy: float
    cost_usd: float


@dataclass(frozen=True)
class RoutingQuality:
    """The figures of one router on one test set; None where a figure is undefined."""

    small_accuracy: float
    large_accuracy: float
    apgr: float | None
    cpt50: float | None
    cpt80: float | None
    large_share_at_95pct_quality: float | None
    cost_ratio_at_95pct_quality: float | None
    curve: tuple[CurvePoint, ...]
    quality_at_95pct: float | None = None  # the target, in the outcomes' units


class BaselineRouter(str, Enum):
    """Routers that need no fitting: the references every learned router is compared with."""

    RANDOM = "random"
    ALWAYS_SMALL = "always-small"
    ALWAYS_LARGE = "always-large"
    ORACLE = "oracle"


def baseline_scores(router: BaselineRouter, outcomes: PromptOutcomes, seed: int = 0) -> NDArray[np.float64]:
    """The score per prompt of a baseline router (higher = send to large).

    random: uniform in [0, 1) from `seed`. always-small / always-large: a constant (0
    or 1), so their sweep is the two endpoints joined linearly (APGR 0.5): a router
    that ignores the prompt can only mix the tiers at random. oracle: what sending the
    prompt to large gains (large minus small quality: +1 where only large is right, -1
    where only small is), so at every share it sends the prompts that gain most: no
    router's curve lies above it.
    """
    n = outcomes.n
    if router is BaselineRouter.RANDOM:
        return np.random.default_rng(seed).random(n)
    if router is BaselineRouter.ALWAYS_SMALL:
        return np.zeros(n)
    if router is BaselineRouter.ALWAYS_LARGE:
        return np.ones(n)
    return np.asarray(outcomes.large_quality - outcomes.small_quality, dtype=np.float64)


def sweep_curve(outcomes: PromptOutcomes, scores: NDArray[np.float64]) -> tuple[CurvePoint, ...]:
    """Accuracy and cost at every distinct cut of the scores, from 0% to 100% large."""
    n = outcomes.n
    if scores.shape != (n,):
        raise ValueError(f"{scores.shape[0]} scores for {n} prompts")
    if n == 0:
        return ()
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    small = outcomes.small_quality
    gained = (outcomes.large_quality - small)[order]
    extra_cost = (outcomes.large_cost - outcomes.small_cost)[order]
    quality = float(small.sum()) + np.concatenate(([0.0], np.cumsum(gained)))
    cost = float(outcomes.small_cost.sum()) + np.concatenate(([0.0], np.cumsum(extra_cost)))
    boundaries = np.flatnonzero(ranked[1:] != ranked[:-1]) + 1
    cuts = np.concatenate(([0], boundaries, [n]))
    return tuple(CurvePoint(int(k) / n, float(quality[k]) / n, float(cost[k])) for k in cuts)


def pgr(accuracy: float, small_accuracy: float, large_accuracy: float) -> float | None:
    """Performance gap recovered; None when the tiers are equally accurate."""
    gap = large_accuracy - small_accuracy
    if abs(gap) < _EPSILON:
        return None
    return (accuracy - small_accuracy) / gap


def area_under_pgr(
    curve: tuple[CurvePoint, ...], small_accuracy: float, large_accuracy: float
) -> float | None:
    """APGR: the trapezoid-rule area under PGR against large share over the swept points."""
    values = [pgr(point.accuracy, small_accuracy, large_accuracy) for point in curve]
    if len(curve) < 2 or any(value is None for value in values):
        return None
    shares = np.array([point.large_share for point in curve])
    heights = np.array(values, dtype=np.float64)
    return float(np.sum(np.diff(shares) * (heights[1:] + heights[:-1]) / 2))


def first_share_reaching(shares: list[float], values: list[float], target: float) -> float | None:
    """The smallest share at which the piecewise-linear curve reaches `target`; None if it never does."""
    if not values:
        return None
    if values[0] >= target - _EPSILON:
        return shares[0]
    for index in range(1, len(values)):
        low, high = values[index - 1], values[index]
        if high >= target - _EPSILON:
            fraction = min(1.0, (target - low) / (high - low))
            return shares[index - 1] + fraction * (shares[index] - shares[index - 1])
    return None


def cost_to_reach_target(
    curve: tuple[CurvePoint, ...], small_accuracy: float, large_accuracy: float, target: float
) -> float | None:
    """CPT(target): the smallest large share at which PGR reaches `target` (e.g. 0.5)."""
    if pgr(large_accuracy, small_accuracy, large_accuracy) is None:
        return None
    shares = [point.large_share for point in curve]
    values = [(point.accuracy - small_accuracy) / (large_accuracy - small_accuracy) for point in curve]
    return first_share_reaching(shares, values, target)


def quality_target(large_accuracy: float, quality: float = 0.95, floor: float = 0.0) -> float:
    """`quality` of the large tier's mean quality, measured from the scale's `floor`."""
    return floor + quality * (large_accuracy - floor)


def quality_point(
    curve: tuple[CurvePoint, ...],
    large_accuracy: float,
    quality: float = 0.95,
    always_large_cost: float | None = None,
    floor: float = 0.0,
) -> tuple[float | None, float | None]:
    """The smallest large share reaching `quality_target`, and its cost / always-large cost.

    The always-large cost is the curve's last point unless `always_large_cost` is given (a
    cascade's curve ends at small + large, but is compared with plain always-large).
    """
    shares = [point.large_share for point in curve]
    target = quality_target(large_accuracy, quality, floor)
    share = first_share_reaching(shares, [point.accuracy for point in curve], target)
    if always_large_cost is not None:
        always_large = always_large_cost
    else:
        always_large = curve[-1].cost_usd if curve else 0.0
    if share is None or always_large <= 0:
        return share, None
    cost = float(np.interp(share, shares, [point.cost_usd for point in curve]))
    return share, cost / always_large


def evaluate_scores(outcomes: PromptOutcomes, scores: NDArray[np.float64]) -> RoutingQuality:
    """Every figure of the evaluation contract for one router's scores."""
    curve = sweep_curve(outcomes, scores)
    return curve_quality(curve, outcomes.small_accuracy, outcomes.large_accuracy, floor=outcomes.floor)


def curve_quality(
    curve: tuple[CurvePoint, ...],
    small: float,
    large: float,
    always_large_cost: float | None = None,
    floor: float = 0.0,
) -> RoutingQuality:
    """Every figure of the evaluation contract read off a traced curve (see `quality_point`)."""
    share95, cost95 = quality_point(curve, large, always_large_cost=always_large_cost, floor=floor)
    return RoutingQuality(
        small_accuracy=small,
        large_accuracy=large,
        apgr=area_under_pgr(curve, small, large),
        cpt50=cost_to_reach_target(curve, small, large, 0.5),
        cpt80=cost_to_reach_target(curve, small, large, 0.8),
        large_share_at_95pct_quality=share95,
        cost_ratio_at_95pct_quality=cost95,
        curve=curve,
        quality_at_95pct=quality_target(large, floor=floor),
    )
