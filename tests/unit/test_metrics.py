"""routing.metrics against figures computed by hand on six made-up prompts."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.metrics import (
    BaselineRouter,
    CurvePoint,
    PromptOutcomes,
    baseline_scores,
    evaluate_scores,
    first_share_reaching,
    pgr,
    sweep_curve,
)

# prompt:         0    1    2    3    4    5
# small correct:  1    1    1    0    0    0     -> small_acc 3/6 = 0.5
# large correct:  1    0    1    1    1    1     -> large_acc 5/6
# score:         .1   .6   .2   .9   .5   .8
# cost small 0.01, large 0.10 per prompt         -> always-small 0.06, always-large 0.60
SMALL = np.array([1, 1, 1, 0, 0, 0], dtype=np.bool_)
LARGE = np.array([1, 0, 1, 1, 1, 1], dtype=np.bool_)
SCORES = np.array([0.1, 0.6, 0.2, 0.9, 0.5, 0.8])


def _outcomes(small: np.ndarray = SMALL, large: np.ndarray = LARGE) -> PromptOutcomes:
    n = small.shape[0]
    return PromptOutcomes(small, large, np.full(n, 0.01), np.full(n, 0.10))


def test_the_sweep_has_a_point_per_cut_with_hand_computed_accuracy_and_cost() -> None:
    # Sent to large in score order 3, 5, 1, 4, 2, 0; the large-minus-small gain of each is
    # +1, +1, -1, +1, 0, 0, so the correct count goes 3, 4, 5, 4, 5, 5, 5, and each prompt
    # moved to large adds 0.10 - 0.01 = 0.09 to the cost of 0.06.
    curve = sweep_curve(_outcomes(), SCORES)
    correct = [3, 4, 5, 4, 5, 5, 5]
    expected = [CurvePoint(k / 6, correct[k] / 6, 0.06 + 0.09 * k) for k in range(7)]
    assert [p.large_share for p in curve] == [p.large_share for p in expected]
    assert [p.accuracy for p in curve] == [p.accuracy for p in expected]
    assert [p.cost_usd for p in curve] == pytest.approx([p.cost_usd for p in expected])


def test_apgr_cpt_and_the_95pct_point_match_hand_computed_values() -> None:
    quality = evaluate_scores(_outcomes(), SCORES)
    assert quality.small_accuracy == 0.5
    assert quality.large_accuracy == pytest.approx(5 / 6)
    # PGR = (acc - 1/2) / (1/3) = (correct - 3) / 2 at each cut: 0, .5, 1, .5, 1, 1, 1.
    # Trapezoids of width 1/6: (0+.5)/2 + (.5+1)/2 + (1+.5)/2 + (.5+1)/2 + 1 + 1 = 4.5 -> 4.5/6 = 0.75.
    assert quality.apgr == pytest.approx(0.75)
    # PGR is exactly .5 at the first cut, 1/6 large.
    assert quality.cpt50 == pytest.approx(1 / 6)
    # .8 lies 0.6 of the way from .5 (share 1/6) to 1.0 (share 2/6): 1.6/6.
    assert quality.cpt80 == pytest.approx(1.6 / 6)
    # 95% of 5/6 = 0.791667 lies (0.791667 - 4/6) / (1/6) = 0.75 of the way from share 1/6
    # to 2/6: 1.75/6; its cost is 0.06 + 1.75 * 0.09 = 0.2175, and 0.2175 / 0.60 = 0.3625.
    assert quality.large_share_at_95pct_quality == pytest.approx(1.75 / 6)
    assert quality.cost_ratio_at_95pct_quality == pytest.approx(0.3625)


def test_the_oracle_ranks_by_what_large_gains_and_bounds_every_router() -> None:
    outcomes = _outcomes()
    # large minus small: 0, -1, 0, +1, +1, +1. Prompts 3, 4, 5 go first, then 0 and 2 (tied,
    # gaining nothing), then 1: cuts at 0, 3/6, 5/6, 1 with accuracy 3/6, 6/6, 6/6, 5/6 ->
    # PGR 0, 1.5, 1.5, 1 -> APGR .5 * .75 + 2/6 * 1.5 + 1/6 * 1.25 = 1.0833.
    oracle = evaluate_scores(outcomes, baseline_scores(BaselineRouter.ORACLE, outcomes))
    assert [p.large_share for p in oracle.curve] == pytest.approx([0.0, 0.5, 5 / 6, 1.0])
    assert [p.accuracy for p in oracle.curve] == pytest.approx([0.5, 1.0, 1.0, 5 / 6])
    assert oracle.apgr == pytest.approx(0.375 + 0.5 + 1.25 / 6)
    rng = np.random.default_rng(0)
    for _ in range(200):  # every ordering's curve, hence its area, lies under the oracle's
        other = evaluate_scores(outcomes, rng.integers(0, 3, size=6).astype(np.float64))
        assert other.apgr <= oracle.apgr + 1e-12  # type: ignore[operator]


def test_a_constant_score_joins_the_two_endpoints_and_gets_half() -> None:
    outcomes = _outcomes()
    for router in (BaselineRouter.ALWAYS_SMALL, BaselineRouter.ALWAYS_LARGE):
        quality = evaluate_scores(outcomes, baseline_scores(router, outcomes))
        assert [(p.large_share, p.accuracy) for p in quality.curve] == [(0.0, 0.5), (1.0, 5 / 6)]
        assert quality.apgr == pytest.approx(0.5)
        assert quality.cpt50 == pytest.approx(0.5)
        assert quality.cpt80 == pytest.approx(0.8)


def test_equal_tier_accuracy_leaves_pgr_figures_undefined() -> None:
    same = np.array([1, 0, 1, 0], dtype=np.bool_)
    flipped = np.array([0, 1, 0, 1], dtype=np.bool_)
    quality = evaluate_scores(_outcomes(same, flipped), np.array([0.4, 0.3, 0.2, 0.1]))
    assert pgr(0.7, 0.5, 0.5) is None
    assert (quality.apgr, quality.cpt50, quality.cpt80) == (None, None, None)
    # the quality point needs no gap: small already keeps 100% of large's accuracy
    assert quality.large_share_at_95pct_quality == 0.0
    assert quality.cost_ratio_at_95pct_quality == pytest.approx(0.04 / 0.40)


def test_the_random_router_is_reproducible_with_its_seed() -> None:
    outcomes = _outcomes()
    first = baseline_scores(BaselineRouter.RANDOM, outcomes, seed=7)
    assert np.array_equal(first, baseline_scores(BaselineRouter.RANDOM, outcomes, seed=7))
    assert not np.array_equal(first, baseline_scores(BaselineRouter.RANDOM, outcomes, seed=8))


def test_a_target_never_reached_has_no_share() -> None:
    assert first_share_reaching([0.0, 1.0], [0.1, 0.4], 0.5) is None
    assert first_share_reaching([0.0, 0.5, 1.0], [0.0, 1.0, 1.0], 0.25) == pytest.approx(0.125)


def test_scores_must_match_the_prompts() -> None:
    with pytest.raises(ValueError):
        sweep_curve(_outcomes(), np.zeros(3))
