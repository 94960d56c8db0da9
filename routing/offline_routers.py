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

Two rankings (`Ranking`): `gain` ranks by that score alone; `gain-per-cost` divides
it by what escalating is expected to cost, estimated before the large call: the
prompt's large-tier input price (known) plus its output price times the output
tokens a log-linear ridge regression (`OutputTokenModel`, fitted on the training
rows only) predicts from the cheap prompt features and the prompt's token count,
and for cascade / combined from the small answer's features and token count too.
Pre's ranking leaves out the small call it saves (2% of the large on gsm8k at list
prices). In 5-fold CV on gsm8k gain-per-cost keeps combined's APGR (0.80) and cuts
its cost at 95% quality from 0.50 to 0.42 of always-large (mean of 5 fold seeds);
for pre it trades APGR for cost (mmlu: APGR 0.62 -> 0.53, cost 0.66 -> 0.49; gsm8k:
0.65 -> 0.59, cost 0.61 -> 0.59), so `gain` stays the default.

Cross-validation (5 folds on gsm8k) chose these shapes: the answer scorer sees the
cheap prompt features but not the prompt's embedding (384 columns of noise for
628 rows), and an embedding of the answer made it worse.

Pure: numpy and pydantic only. Must not import the store, the tasks, providers or
the worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from tierflow.routing.scorers import LogisticScorer, Matrix, Vector, fit_scorer

PRE_WEIGHT_IN_COMBINED = 0.5
# Ridge penalty on standardised columns; CV R^2 of log output tokens 0.30 (pre), 0.45 (cascade).
OUTPUT_TOKENS_L2 = 1.0
MIN_EXPECTED_COST = 1e-9  # USD: keeps the ratio finite for a free model


class LearnedRouter(str, Enum):
    """Routers fitted on recorded outcomes."""

    PRE = "pre"
    CASCADE = "cascade"
    COMBINED = "combined"

    @property
    def needs_answers(self) -> bool:
        """Whether the router reads the small model's answer (so always pays for the small call)."""
        return self is not LearnedRouter.PRE


class Ranking(str, Enum):
    """What orders the prompts for escalation: the expected gain, or the gain per expected dollar."""

    GAIN = "gain"
    GAIN_PER_COST = "gain-per-cost"


@dataclass(frozen=True)
class CallCosts:
    """What each prompt's large call costs: the part known before it, and what it turned out to be.

    Attributes:
        prompt_tokens: the prompt's token count (known before any call).
        small_output_tokens: the small answer's token count; known only once it has answered.
        large_input_usd: the prompt's input price on the large tier (known before the call).
        large_output_usd_per_token: the large tier's output price.
        large_output_tokens: recorded; what the regression learns, never a feature.
    """

    prompt_tokens: Vector
    small_output_tokens: Vector
    large_input_usd: Vector
    large_output_usd_per_token: Vector
    large_output_tokens: Vector

    def take(self, index: NDArray[np.bool_] | NDArray[np.intp]) -> CallCosts:
        """The rows selected by a mask or by positions."""
        return CallCosts(*(np.asarray(column)[index] for column in _columns(self)))


@dataclass(frozen=True)
class RoutingRows:
    """Features and outcomes of some prompts, one row each.

    Attributes:
        cheap: `routing.scorers.cheap_features` of each prompt.
        embedding: each prompt's sentence embedding (width 0 for none).
        answer: `routing.answer_features` of the small model's answer; None when not recorded.
        small_good: the small tier's quality on [0, 1] (right: 1, wrong: 0; a score by its range).
        large_good: the large tier's, the same way.
        costs: token counts and prices, needed by the gain-per-cost ranking only.
    """

    cheap: Matrix
    embedding: Matrix
    answer: Matrix | None
    small_good: NDArray[np.float64]
    large_good: NDArray[np.float64]
    costs: CallCosts | None = None

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
        costs = None if self.costs is None else self.costs.take(index)
        return RoutingRows(
            self.cheap[index],
            self.embedding[index],
            answer,
            self.small_good[index],
            self.large_good[index],
            costs,
        )

    def cost_features(self, router: LearnedRouter) -> Matrix:
        """What predicts the large answer's length: what is known when `router` decides."""
        costs = _required_costs(self.costs)
        known = [self.cheap, np.log1p(costs.prompt_tokens)[:, None]]
        if router.needs_answers:
            if self.answer is None:
                raise ValueError("these rows have no answer features")
            known += [np.log1p(costs.small_output_tokens)[:, None], self.answer]
        return np.hstack(known)


def stack_rows(parts: Sequence[RoutingRows]) -> RoutingRows:
    """The rows of every part, in order; answers only if every part has them."""
    answers = [part.answer for part in parts]
    costs = [part.costs for part in parts]
    return RoutingRows(
        np.vstack([part.cheap for part in parts]),
        np.vstack([part.embedding for part in parts]),
        None if any(a is None for a in answers) else np.vstack([a for a in answers if a is not None]),
        np.concatenate([part.small_good for part in parts]),
        np.concatenate([part.large_good for part in parts]),
        None if any(c is None for c in costs) else _stack_costs([c for c in costs if c is not None]),
    )


def _columns(costs: CallCosts) -> tuple[Vector, ...]:
    return tuple(getattr(costs, field.name) for field in dataclasses.fields(costs))


def _stack_costs(parts: Sequence[CallCosts]) -> CallCosts:
    return CallCosts(*(np.concatenate(column) for column in zip(*map(_columns, parts), strict=True)))


@dataclass(frozen=True)
class OutputTokenModel:
    """log(1 + large output tokens) as a ridge regression on standardised features."""

    weights: Vector  # bias last
    mean: Vector
    scale: Vector
    residual_variance: float

    def expected_tokens(self, features: Matrix) -> Vector:
        """The expected token count (log-normal: exp(mean + variance / 2) - 1)."""
        design = np.hstack([(features - self.mean) / self.scale, np.ones((features.shape[0], 1))])
        return np.asarray(np.expm1(design @ self.weights + self.residual_variance / 2), dtype=np.float64)


def fit_output_tokens(features: Matrix, tokens: Vector, l2: float = OUTPUT_TOKENS_L2) -> OutputTokenModel:
    """Fit `OutputTokenModel` by ridge regression (the bias unpenalised)."""
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    design = np.hstack([(features - mean) / scale, np.ones((features.shape[0], 1))])
    penalty = np.eye(design.shape[1]) * l2
    penalty[-1, -1] = 0.0
    target = np.log1p(tokens)
    weights = np.linalg.solve(design.T @ design + penalty, design.T @ target)
    residual = float(np.var(target - design @ weights))
    return OutputTokenModel(weights, mean, scale, residual)


@dataclass(frozen=True)
class FittedRouter:
    """The scorers of one learned router."""

    router: LearnedRouter
    large: LogisticScorer  # P(large good | prompt)
    small: LogisticScorer | None  # P(small good | prompt): pre and combined
    small_given_answer: LogisticScorer | None  # P(small good | prompt, answer): cascade and combined
    output_tokens: OutputTokenModel | None = None  # the gain-per-cost ranking only

    def scores(self, rows: RoutingRows) -> Vector:
        """Higher = send to large: the gain, or with an output-token model the gain per expected USD."""
        gain = self.gains(rows)
        if self.output_tokens is None:
            return gain
        costs = _required_costs(rows.costs)
        tokens = self.output_tokens.expected_tokens(rows.cost_features(self.router))
        expected = costs.large_input_usd + costs.large_output_usd_per_token * tokens
        return np.asarray(gain / np.maximum(expected, MIN_EXPECTED_COST), dtype=np.float64)

    def gains(self, rows: RoutingRows) -> Vector:
        """How much more likely the large tier is to be right (combined: a weighted sum of two such)."""
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


def _required_costs(costs: CallCosts | None) -> CallCosts:
    if costs is None:
        raise ValueError("the gain-per-cost ranking needs the rows' token counts and prices")
    return costs


def fit_router(
    router: LearnedRouter, rows: RoutingRows, seed: int = 0, rank: Ranking = Ranking.GAIN
) -> FittedRouter:
    """Fit the scorers `router` needs on `rows`, and for gain-per-cost the output-token model.

    Raises:
        ValueError: no rows, cascade/combined on rows without answer features, or
            gain-per-cost on rows without costs.
    """
    if router.needs_answers and rows.answer is None:
        raise ValueError(f"{router.value} needs the small model's answers")
    output_tokens = None
    if rank is Ranking.GAIN_PER_COST:
        tokens = _required_costs(rows.costs).large_output_tokens
        output_tokens = fit_output_tokens(rows.cost_features(router), tokens)
    prompt = rows.prompt
    large = fit_scorer(prompt, rows.large_good, seed=seed)
    small = None if router is LearnedRouter.CASCADE else fit_scorer(prompt, rows.small_good, seed=seed)
    given_answer = (
        fit_scorer(rows.prompt_and_answer, rows.small_good, seed=seed) if router.needs_answers else None
    )
    return FittedRouter(router, large, small, given_answer, output_tokens)


def learned_scores(
    router: LearnedRouter, train: RoutingRows, test: RoutingRows, seed: int = 0, rank: Ranking = Ranking.GAIN
) -> Vector:
    """Fit on `train`, score `test`."""
    return fit_router(router, train, seed, rank).scores(test)


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
    router: LearnedRouter,
    train: RoutingRows | None,
    test: RoutingRows,
    folds: int,
    seed: int = 0,
    rank: Ranking = Ranking.GAIN,
) -> Vector:
    """Every test row scored by a router (and cost model) fitted on `train` plus the test rows of the
    other folds."""
    fold = assign_folds(test.n, folds, seed)
    scores = np.zeros(test.n, dtype=np.float64)
    for index in range(folds):
        held = fold == index
        rest = test.take(~held)
        fitted = fit_router(router, rest if train is None else stack_rows([train, rest]), seed, rank)
        scores[held] = fitted.scores(test.take(held))
    return scores
