"""routing.offline_routers on synthetic prompts whose right tier a feature decides."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from tierflow.routing.metrics import BaselineRouter, PromptOutcomes, baseline_scores, evaluate_scores
from tierflow.routing.offline_routers import (
    CallCosts,
    LearnedRouter,
    Ranking,
    RoutingRows,
    assign_folds,
    cross_validated_scores,
    fit_output_tokens,
    fit_router,
    learned_scores,
    stack_rows,
)


def _apgr(rows: RoutingRows, scores: NDArray[np.float64]) -> float:
    outcomes = PromptOutcomes(rows.small_good, rows.large_good, np.full(rows.n, 0.01), np.full(rows.n, 0.1))
    apgr = evaluate_scores(outcomes, scores).apgr
    assert apgr is not None
    return apgr


def _random_apgr(rows: RoutingRows) -> float:
    outcomes = PromptOutcomes(rows.small_good, rows.large_good, np.zeros(rows.n), np.ones(rows.n))
    return _apgr(rows, baseline_scores(BaselineRouter.RANDOM, outcomes, seed=1))


def _rows(n: int, seed: int, decided_by: str) -> RoutingRows:
    """Hard prompts (small wrong, large right) among easy ones (both right), with 10% label noise.

    decided_by: "cheap" (cheap column 2 is high on hard prompts), "embedding" (direction
    3 of the embedding) or "answer" (answer column 1; the prompt says nothing).
    """
    rng = np.random.default_rng(seed)
    hard = rng.random(n) < 0.4
    cheap, embedding, answer = rng.normal(size=(n, 5)), rng.normal(size=(n, 8)), rng.normal(size=(n, 4))
    signal = np.where(hard, 3.0, -3.0)
    {"cheap": cheap[:, 2], "embedding": embedding[:, 3], "answer": answer[:, 1]}[decided_by][:] += signal
    noise = rng.random(n) < 0.1
    small_good = ~hard ^ noise
    large_good = np.ones(n, dtype=np.bool_) ^ (rng.random(n) < 0.05)
    return RoutingRows(cheap, embedding, answer, small_good, large_good)


@pytest.mark.parametrize("decided_by", ["cheap", "embedding"])
def test_pre_learns_the_prompt_feature_that_decides_the_tier(decided_by: str) -> None:
    # the label noise caps what a router that knows exactly which prompts are hard reaches: about 0.76
    train, test = _rows(400, 0, decided_by), _rows(400, 1, decided_by)
    apgr = _apgr(test, learned_scores(LearnedRouter.PRE, train, test))
    assert apgr > 0.7
    assert apgr > _random_apgr(test) + 0.2


@pytest.mark.parametrize("router", [LearnedRouter.CASCADE, LearnedRouter.COMBINED])
def test_cascade_and_combined_learn_from_the_small_models_answer(router: LearnedRouter) -> None:
    train, test = _rows(400, 0, "answer"), _rows(400, 1, "answer")
    assert _apgr(test, learned_scores(router, train, test)) > 0.7
    # the prompt alone says nothing here, so pre is no better than chance
    assert _apgr(test, learned_scores(LearnedRouter.PRE, train, test)) < 0.65


def test_cross_validation_on_the_test_file_alone_learns_too() -> None:
    test = _rows(300, 2, "cheap")
    assert _apgr(test, cross_validated_scores(LearnedRouter.PRE, None, test, folds=5)) > 0.7


def test_folds_are_deterministic_balanced_and_cover_every_row() -> None:
    folds = assign_folds(103, 5, seed=3)
    assert np.array_equal(folds, assign_folds(103, 5, seed=3))
    assert not np.array_equal(folds, assign_folds(103, 5, seed=4))
    sizes = np.bincount(folds)
    assert sizes.shape == (5,) and sizes.sum() == 103 and sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("folds", [0, 1, 11])
def test_impossible_fold_counts_are_refused(folds: int) -> None:
    with pytest.raises(ValueError, match="folds"):
        assign_folds(10, folds)


def _memorisable(n: int, seed: int) -> RoutingRows:
    """Every row has a feature of its own and a random outcome and answer length: only a scorer
    that saw it tells it apart."""
    rng = np.random.default_rng(seed)
    identity = np.eye(n)
    small_good = rng.random(n) < 0.5
    same = np.full(n, 100.0)
    costs = CallCosts(same, same, same / 1e6, same / 1e6, rng.integers(10, 1000, n).astype(np.float64))
    return RoutingRows(identity, np.zeros((n, 0)), identity.copy(), small_good, ~small_good, costs)


@pytest.mark.parametrize("rank", list(Ranking))
@pytest.mark.parametrize("router", list(LearnedRouter))
@pytest.mark.parametrize("with_train", [False, True])
def test_no_fold_is_scored_by_a_scorer_that_saw_it(
    router: LearnedRouter, with_train: bool, rank: Ranking
) -> None:
    test, train = _memorisable(40, 5), None
    if with_train:  # train rows get columns of their own, after the test rows'
        both = _memorisable(60, 6)
        test, train = both.take(np.arange(40)), both.take(np.arange(40, 60))
    scores = cross_validated_scores(router, train, test, folds=4, seed=0, rank=rank)
    for fold in range(4):
        held = scores[assign_folds(40, 4, seed=0) == fold]
        # a row's own column is all zeros in the rows the scorers saw, so held rows look alike
        assert float(np.ptp(held)) < 1e-9
    seen = test if train is None else stack_rows([train, test])
    leaked = fit_router(router, seen, rank=rank).scores(test)
    assert float(np.ptp(leaked)) > 1e-3  # the same check catches a scorer that did see the rows


def test_cascade_needs_the_answers() -> None:
    rows = _rows(50, 0, "cheap")
    without = RoutingRows(rows.cheap, rows.embedding, None, rows.small_good, rows.large_good)
    with pytest.raises(ValueError, match="answers"):
        fit_router(LearnedRouter.CASCADE, without)
    assert fit_router(LearnedRouter.PRE, without).scores(without).shape == (50,)


def test_stacked_rows_keep_answers_only_when_every_part_has_them() -> None:
    rows = _rows(10, 0, "cheap")
    without = RoutingRows(rows.cheap, rows.embedding, None, rows.small_good, rows.large_good)
    assert stack_rows([rows, rows]).answer is not None
    assert stack_rows([rows, rows]).n == 20
    assert stack_rows([rows, without]).answer is None


def _priced(rows: RoutingRows, seed: int) -> RoutingRows:
    """Rows whose large answer is long (40x the tokens) when cheap column 0 is high, on hard and easy
    prompts alike: a gain ranking cannot see it, a gain-per-cost ranking can."""
    rng = np.random.default_rng(seed)
    long_answer = rows.cheap[:, 0] > 0
    rows.cheap[:, 0] += np.where(long_answer, 2.0, -2.0)
    tokens = np.where(long_answer, 2000.0, 50.0) * rng.uniform(0.8, 1.25, rows.n)
    prompt = np.full(rows.n, 100.0)
    costs = CallCosts(prompt, np.full(rows.n, 80.0), prompt * 10 / 1e6, np.full(rows.n, 30 / 1e6), tokens)
    return RoutingRows(rows.cheap, rows.embedding, rows.answer, rows.small_good, rows.large_good, costs)


def _true_outcomes(rows: RoutingRows) -> PromptOutcomes:
    assert rows.costs is not None
    large = (
        rows.costs.large_input_usd + rows.costs.large_output_usd_per_token * rows.costs.large_output_tokens
    )
    return PromptOutcomes(rows.small_good, rows.large_good, np.full(rows.n, 1e-6), large)


def _cost_at(rows: RoutingRows, scores: NDArray[np.float64], gap_recovered: float) -> float:
    """The cost of the cheapest swept point recovering `gap_recovered` of the accuracy gap."""
    quality = evaluate_scores(_true_outcomes(rows), scores)
    target = quality.small_accuracy + gap_recovered * (quality.large_accuracy - quality.small_accuracy)
    return min(point.cost_usd for point in quality.curve if point.accuracy >= target - 1e-12)


@pytest.mark.parametrize("router", list(LearnedRouter))
def test_gain_per_cost_escalates_the_cheap_hard_prompts_first(router: LearnedRouter) -> None:
    decided_by = "cheap" if router is LearnedRouter.PRE else "answer"
    train, test = _priced(_rows(400, 0, decided_by), 0), _priced(_rows(400, 1, decided_by), 1)
    by_gain = learned_scores(router, train, test, rank=Ranking.GAIN)
    per_cost = learned_scores(router, train, test, rank=Ranking.GAIN_PER_COST)
    hard = ~test.small_good & test.large_good
    assert test.costs is not None
    long_answer = test.costs.large_output_tokens > 500
    # among the hard prompts, the gain ranking ignores the length; the cost-aware one puts short first
    first = np.argsort(-per_cost)[: int(hard.sum()) // 2]
    assert np.mean(long_answer[first]) < 0.2 < np.mean(long_answer[np.argsort(-by_gain)[: first.size]])
    assert _cost_at(test, per_cost, 0.4) < 0.6 * _cost_at(test, by_gain, 0.4)


def test_the_output_token_model_recovers_a_log_linear_length() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 3))
    tokens = np.expm1(4.0 + 1.5 * features[:, 1])
    model = fit_output_tokens(features, tokens, l2=1e-6)
    assert model.residual_variance < 1e-6
    assert np.allclose(model.expected_tokens(features[:5]), tokens[:5], rtol=1e-3)


def test_gain_per_cost_needs_the_rows_costs() -> None:
    rows = _rows(50, 0, "cheap")
    assert rows.costs is None
    with pytest.raises(ValueError, match="gain-per-cost"):
        fit_router(LearnedRouter.PRE, rows, rank=Ranking.GAIN_PER_COST)


def test_taking_and_stacking_rows_keeps_their_costs_in_step() -> None:
    rows = _priced(_rows(10, 0, "cheap"), 0)
    assert rows.costs is not None
    taken = rows.take(np.array([3, 7]))
    assert taken.costs is not None
    assert np.array_equal(taken.costs.large_output_tokens, rows.costs.large_output_tokens[[3, 7]])
    stacked = stack_rows([rows, taken])
    assert stacked.costs is not None and stacked.costs.prompt_tokens.shape == (12,)
    without = RoutingRows(rows.cheap, rows.embedding, rows.answer, rows.small_good, rows.large_good)
    assert stack_rows([rows, without]).costs is None
