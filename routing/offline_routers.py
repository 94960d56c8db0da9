"""Learned routers fitted and scored on recorded outcomes, offline: `pre`, `cascade`, `combined`.

Owns `LearnedRouter`, `RoutingRows` (per prompt: cheap prompt features, the prompt's
embedding, the features of the small model's answer when it is known, and whether
each tier was right), `fit_router` / `FittedRouter.scores` (higher = send to
large, as `routing.metrics` expects) and the k-fold helper that scores each fold
of a test file with scorers that never saw it.

- pre: P(large good | prompt) - P(small good | prompt), before any call.
- cascade: the small tier has answered; P(large good | prompt) - P(small good |
  prompt's cheap features, answer features). Escalating costs both calls.
- combined: the cascade score plus half the pre score, so that the prompt's
  embedding also informs the judgement of the answer.

Cross-validation (5 folds on gsm8k) chose these shapes: the answer scorer sees the
cheap prompt features but not the prompt's embedding (384 columns of noise for
628 rows), and an embedding of the answer made it worse.

Pure: numpy and pydantic only. Must not import the store, the tasks, providers or
the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from routing.scorers import LogisticScorer, Matrix, Vector, fit_scorer

PRE_WEIGHT_IN_COMBINED = 0.5


class LearnedRouter(str, Enum):
    """Routers fitted on recorded outcomes."""

    PRE = "pre"
    CASCADE = "cascade"
    COMBINED = "combined"

    @property
    def needs_answers(self) -> bool:
        """Whether the router reads the small model's answer (so always pays for the small call)."""
        return self is not LearnedRouter.PRE


@dataclass(frozen=True)
class RoutingRows:
    """Features and outcomes of some prompts, one row each.

    Attributes:
        cheap: `routing.scorers.cheap_features` of each prompt.
        embedding: each prompt's sentence embedding (width 0 for none).
        answer: `routing.answer_features` of the small model's answer; None when not recorded.
        small_good: whether the small tier's answer was right.
        large_good: whether the large tier's answer was right.
    """

    cheap: Matrix
    embedding: Matrix
    answer: Matrix | None
    small_good: NDArray[np.bool_]
    large_good: NDArray[np.bool_]

    @property
    def n(self) -> int:
        return int(self.small_good.shape[0])

    @property
    def prompt(self) -> Matrix:
        """What the prompt-only scorers see: cheap features and the embedding."""
        return np.hstack([self.cheap, self.embedding])

    @property
    def prompt_and_answer(self) -> Matrix:
        """What the answer scorer sees: the prompt's cheap features and the answer's."""
        if self.answer is None:
            raise ValueError("these rows have no answer features")
        return np.hstack([self.cheap, self.answer])

    def take(self, index: NDArray[np.bool_] | NDArray[np.intp]) -> RoutingRows:
        """The rows selected by a mask or by positions."""
        answer = None if self.answer is None else self.answer[index]
        return RoutingRows(
            self.cheap[index], self.embedding[index], answer, self.small_good[index], self.large_good[index]
        )


def stack_rows(parts: Sequence[RoutingRows]) -> RoutingRows:
    """The rows of every part, in order; answers only if every part has them."""
    answers = [part.answer for part in parts]
    return RoutingRows(
        np.vstack([part.cheap for part in parts]),
        np.vstack([part.embedding for part in parts]),
        None if any(a is None for a in answers) else np.vstack([a for a in answers if a is not None]),
        np.concatenate([part.small_good for part in parts]),
        np.concatenate([part.large_good for part in parts]),
    )


@dataclass(frozen=True)
class FittedRouter:
    """The scorers of one learned router."""

    router: LearnedRouter
    large: LogisticScorer  # P(large good | prompt)
    small: LogisticScorer | None  # P(small good | prompt): pre and combined
    small_given_answer: LogisticScorer | None  # P(small good | prompt, answer): cascade and combined

    def scores(self, rows: RoutingRows) -> Vector:
        """Higher = send to large."""
        large = self.large.probability(rows.prompt)
        if self.router is LearnedRouter.PRE:
            return large - _required(self.small).probability(rows.prompt)
        cascade = large - _required(self.small_given_answer).probability(rows.prompt_and_answer)
        if self.router is LearnedRouter.CASCADE:
            return cascade
        pre = large - _required(self.small).probability(rows.prompt)
        return np.asarray(cascade + PRE_WEIGHT_IN_COMBINED * pre, dtype=np.float64)


def _required(scorer: LogisticScorer | None) -> LogisticScorer:
    if scorer is None:
        raise ValueError("this router was fitted without the scorer it needs")
    return scorer


def fit_router(router: LearnedRouter, rows: RoutingRows, seed: int = 0) -> FittedRouter:
    """Fit the scorers `router` needs on `rows`.

    Raises:
        ValueError: no rows, or cascade/combined on rows without answer features.
    """
    if router.needs_answers and rows.answer is None:
        raise ValueError(f"{router.value} needs the small model's answers")
    prompt = rows.prompt
    large = fit_scorer(prompt, rows.large_good, seed=seed)
    small = None if router is LearnedRouter.CASCADE else fit_scorer(prompt, rows.small_good, seed=seed)
    given_answer = (
        fit_scorer(rows.prompt_and_answer, rows.small_good, seed=seed) if router.needs_answers else None
    )
    return FittedRouter(router, large, small, given_answer)


def learned_scores(router: LearnedRouter, train: RoutingRows, test: RoutingRows, seed: int = 0) -> Vector:
    """Fit on `train`, score `test`."""
    return fit_router(router, train, seed).scores(test)


def assign_folds(n: int, folds: int, seed: int = 0) -> NDArray[np.intp]:
    """The fold (0..folds-1) of each of `n` rows: a seeded shuffle dealt round-robin.

    Fold sizes differ by at most one; the same `n`, `folds` and `seed` give the same folds.

    Raises:
        ValueError: fewer than two folds, or more folds than rows.
    """
    if folds < 2 or folds > n:
        raise ValueError(f"need 2 to {n} folds for {n} rows, got {folds}")
    return np.asarray(np.random.default_rng(seed).permutation(n) % folds, dtype=np.intp)


def cross_validated_scores(
    router: LearnedRouter, train: RoutingRows | None, test: RoutingRows, folds: int, seed: int = 0
) -> Vector:
    """Every test row scored by a router fitted on `train` plus the test rows of the other folds."""
    fold = assign_folds(test.n, folds, seed)
    scores = np.zeros(test.n, dtype=np.float64)
    for index in range(folds):
        held = fold == index
        rest = test.take(~held)
        fitted = fit_router(router, rest if train is None else stack_rows([train, rest]), seed)
        scores[held] = fitted.scores(test.take(held))
    return scores
