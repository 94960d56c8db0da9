"""routing.offline_routers on synthetic prompts whose right tier a feature decides."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from routing.metrics import BaselineRouter, PromptOutcomes, baseline_scores, evaluate_scores
from routing.offline_routers import (
    LearnedRouter,
    RoutingRows,
    assign_folds,
    cross_validated_scores,
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
    """Every row has a feature of its own and a random outcome: only a scorer that saw it tells it apart."""
    rng = np.random.default_rng(seed)
    identity = np.eye(n)
    small_good = rng.random(n) < 0.5
    return RoutingRows(identity, np.zeros((n, 0)), identity.copy(), small_good, ~small_good)


@pytest.mark.parametrize("router", list(LearnedRouter))
@pytest.mark.parametrize("with_train", [False, True])
def test_no_fold_is_scored_by_a_scorer_that_saw_it(router: LearnedRouter, with_train: bool) -> None:
    test, train = _memorisable(40, 5), None
    if with_train:  # train rows get columns of their own, after the test rows'
        both = _memorisable(60, 6)
        test, train = both.take(np.arange(40)), both.take(np.arange(40, 60))
    scores = cross_validated_scores(router, train, test, folds=4, seed=0)
    for fold in range(4):
        held = scores[assign_folds(40, 4, seed=0) == fold]
        # a row's own column is all zeros in the rows the scorers saw, so held rows look alike
        assert float(np.ptp(held)) < 1e-9
    leaked = fit_router(router, test if train is None else stack_rows([train, test])).scores(test)
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
