"""routing.ope on a four-decision stream computed by hand, and on a simulated one."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.ope import (
    Estimator,
    LoggedStream,
    candidate_shares,
    doubly_robust,
    doubly_robust_difference,
    effective_rows,
    estimate_all,
    ips,
    snips,
)

# row  logged  propensity  outcome  candidate  q(small), q(large)   weight
#  0   small      0.8         1       small        0.7, 0.9          1.25
#  1   large      0.2         1       large        0.4, 0.8          5
#  2   small      0.8         0       large        0.3, 0.6          0
#  3   large      0.5         0       large        0.5, 0.5          2
STREAM = LoggedStream(
    chosen=np.array([0, 1, 0, 1], dtype=np.intp),
    propensity=np.array([0.8, 0.2, 0.8, 0.5]),
    outcome=np.array([1.0, 1.0, 0.0, 0.0]),
    candidate=np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]),
    predicted=np.array([[0.7, 0.9], [0.4, 0.8], [0.3, 0.6], [0.5, 0.5]]),
)
Z90 = 1.6448536269514722


def test_weights_are_the_candidates_probability_over_the_logging_propensity() -> None:
    assert STREAM.weights == pytest.approx([1.25, 5.0, 0.0, 2.0])
    assert effective_rows(STREAM) == pytest.approx(8.25**2 / (1.5625 + 25 + 4))


def test_ips_and_its_interval_match_hand_computed_values() -> None:
    estimate = ips(STREAM)
    # terms 1.25, 5, 0, 0: mean 1.5625; squared deviations sum to 16.796875, so the standard
    # error is sqrt(16.796875 / 3) / 2 = 1.183106 and the 90% half-width 1.946037.
    assert estimate.value == pytest.approx(1.5625)
    assert (estimate.low, estimate.high) == pytest.approx((1.5625 - 1.946037, 1.5625 + 1.946037), abs=1e-6)
    assert (estimate.estimator, estimate.level, estimate.rows) == (Estimator.IPS, 0.9, 4)


def test_snips_normalises_by_the_weights() -> None:
    estimate = snips(STREAM)
    assert estimate.value == pytest.approx(6.25 / 8.25)
    # delta-method terms w (r - V) / mean(w), mean(w) = 2.0625
    value = 6.25 / 8.25
    terms = np.array([1.25 * (1 - value), 5 * (1 - value), 0.0, 2 * (0 - value)]) / 2.0625
    half = Z90 * np.std(terms, ddof=1) / 2
    assert (estimate.low, estimate.high) == pytest.approx((value - half, value + half))


def test_doubly_robust_matches_hand_computed_values() -> None:
    estimate = doubly_robust(STREAM)
    # 0.7 + 1.25 x 0.3 = 1.075; 0.8 + 5 x 0.2 = 1.8; 0.6 + 0 = 0.6; 0.5 + 2 x (0 - 0.5) = -0.5
    terms = np.array([1.075, 1.8, 0.6, -0.5])
    assert estimate.value == pytest.approx(2.975 / 4)
    half = Z90 * np.std(terms, ddof=1) / 2
    assert (estimate.low, estimate.high) == pytest.approx((2.975 / 4 - half, 2.975 / 4 + half))


def test_cost_is_estimated_on_the_same_decisions() -> None:
    costs = STREAM.with_outcome(np.array([0.01, 0.10, 0.01, 0.10]))
    # weights 1.25, 5, 0, 2: (0.0125 + 0.5 + 0 + 0.2) / 4
    assert ips(costs).value == pytest.approx(0.7125 / 4)
    assert set(estimate_all(costs)) == {Estimator.IPS, Estimator.SNIPS}  # no outcome model for cost
    assert candidate_shares(STREAM.candidate) == pytest.approx([0.25, 0.75])


def test_on_a_simulated_stream_ips_and_dr_are_unbiased_and_snips_nearly() -> None:
    rng = np.random.default_rng(7)
    n, runs = 400, 300
    p_good = np.column_stack([rng.uniform(0.3, 0.7, n), rng.uniform(0.6, 0.95, n)])
    candidate = np.zeros((n, 2))
    candidate[np.arange(n), (p_good[:, 1] - p_good[:, 0] > 0.25).astype(int)] = 1.0
    truth = float((candidate * p_good).sum(axis=1).mean())
    logging_large = np.where(p_good[:, 0] < 0.5, 0.9, 0.1)  # the logging policy's P(large)
    found: dict[Estimator, list[float]] = {estimator: [] for estimator in Estimator}
    covered = 0
    for _ in range(runs):
        chosen = (rng.random(n) < logging_large).astype(np.intp)
        propensity = np.where(chosen == 1, logging_large, 1 - logging_large)
        outcome = (rng.random(n) < p_good[np.arange(n), chosen]).astype(np.float64)
        stream = LoggedStream(chosen, propensity, outcome, candidate, p_good * 0.8 + 0.1)
        for estimator, estimate in estimate_all(stream).items():
            found[estimator].append(estimate.value)
        dr = doubly_robust(stream)
        covered += dr.low <= truth <= dr.high
    for estimator in Estimator:  # 300 runs: the mean's standard error is about 0.002
        assert np.mean(found[estimator]) == pytest.approx(truth, abs=0.01)
    assert 0.8 <= covered / runs <= 0.97  # a 90% interval covers the truth about 90% of the time


def test_bad_streams_are_refused() -> None:
    with pytest.raises(ValueError, match="propensity"):
        LoggedStream(np.array([0]), np.array([0.0]), np.array([1.0]), np.array([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="one value per"):
        LoggedStream(np.array([0, 1]), np.array([1.0]), np.array([1.0]), np.array([[1.0, 0.0]]))
    empty = LoggedStream(np.zeros(0, np.intp), np.zeros(0), np.zeros(0), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="no logged"):
        ips(empty)
    never = LoggedStream(np.array([0]), np.array([1.0]), np.array([1.0]), np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="none of the logged"):
        snips(never)
    with pytest.raises(ValueError, match="outcome model"):
        doubly_robust(never)


def test_the_paired_difference_of_two_candidates_on_the_same_rows() -> None:
    all_small = LoggedStream(STREAM.chosen, STREAM.propensity, STREAM.outcome, np.tile([1.0, 0.0], (4, 1)))
    all_small = all_small.with_outcome(STREAM.outcome, STREAM.predicted)
    # all-small's DR terms: 0.7 + 1.25 x 0.3 = 1.075; 0.4; 0.3 + 1.25 x (0 - 0.3) = -0.075; 0.5
    assert doubly_robust(all_small).value == pytest.approx(1.9 / 4)
    change = doubly_robust_difference(STREAM, all_small)
    terms = np.array([0.0, 1.4, 0.675, -1.0])
    assert change.value == pytest.approx(terms.mean())
    half = Z90 * np.std(terms, ddof=1) / 2
    assert (change.low, change.high) == pytest.approx((terms.mean() - half, terms.mean() + half))
    same = doubly_robust_difference(STREAM, STREAM)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same logged rows"):
        doubly_robust_difference(STREAM, all_small.with_outcome(np.zeros(4), STREAM.predicted))
