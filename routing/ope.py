"""Off-policy evaluation: a candidate policy's value estimated from decisions another policy logged.

Owns `LoggedStream` (per logged decision: the action taken, the logging policy's
probability of it, the outcome observed; the candidate's probability of every
action; optionally an outcome model's prediction for every action) and three
estimators with normal-approximation confidence intervals:

- IPS, inverse propensity scoring: mean of w_i r_i, where w_i = pi(a_i | x_i) /
  mu(a_i | x_i) is the candidate's probability of the logged action over the
  logging policy's. Unbiased where the logging policy could take every action the
  candidate takes; interval from the terms' standard error.
- SNIPS, self-normalised IPS: sum(w_i r_i) / sum(w_i). Slightly biased, much less
  variable; interval by the delta method (terms w_i (r_i - V) / mean(w)).
- DR, doubly robust: mean of sum_a pi(a | x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)),
  where q is the outcome model (tierflow's scorers: P(good | prompt, tier)).
  Unbiased if either the propensities or q are right; interval from the terms.
  `doubly_robust_difference` compares two candidates on the same rows, paired.

"Outcome" is whatever is averaged: success (0 / 1, or a quality in [0, 1]) or
cost per job. A decision whose propensity is unknown cannot be weighted and must be
left out by the caller (and counted); a propensity of 0 for the logged action is a
contradiction and is refused.

Pure: numpy and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float64]
Matrix = NDArray[np.float64]


class Estimator(str, Enum):
    IPS = "ips"
    SNIPS = "snips"
    DR = "dr"


@dataclass(frozen=True)
class LoggedStream:
    """Logged decisions, one row each, with the candidate's view of them.

    Attributes:
        chosen: the action (tier index) the logging policy took.
        propensity: the logging policy's probability of `chosen`, in (0, 1].
        outcome: what was observed after it (success, or cost).
        candidate: (rows, actions) the candidate's probability of each action.
        predicted: (rows, actions) the outcome model's expectation per action (DR only).
    """

    chosen: NDArray[np.intp]
    propensity: Vector
    outcome: Vector
    candidate: Matrix
    predicted: Matrix | None = None

    def __post_init__(self) -> None:
        n = self.chosen.shape[0]
        if self.propensity.shape != (n,) or self.outcome.shape != (n,) or self.candidate.shape[0] != n:
            raise ValueError("every column needs one value per logged decision")
        if n and (np.any(self.propensity <= 0) or np.any(self.propensity > 1)):
            raise ValueError("a logged action's propensity must lie in (0, 1]")
        if self.predicted is not None and self.predicted.shape != self.candidate.shape:
            raise ValueError("the outcome model needs one prediction per row and action")

    @property
    def n(self) -> int:
        return int(self.chosen.shape[0])

    @property
    def weights(self) -> Vector:
        """pi(a_i | x_i) / mu(a_i | x_i)."""
        taken = self.candidate[np.arange(self.n), self.chosen]
        return np.asarray(taken / self.propensity, dtype=np.float64)

    def with_outcome(self, outcome: Vector, predicted: Matrix | None = None) -> LoggedStream:
        """The same decisions with another observed quantity (say cost instead of success) and
        its outcome model, if any."""
        return LoggedStream(self.chosen, self.propensity, outcome, self.candidate, predicted)


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its two-sided interval at `level`."""

    estimator: Estimator
    value: float
    low: float
    high: float
    level: float
    rows: int

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "estimator": self.estimator.value,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "rows": self.rows,
        }


def _interval(estimator: Estimator, value: float, terms: Vector, level: float) -> Estimate:
    n = terms.shape[0]
    z = NormalDist().inv_cdf(0.5 + level / 2)
    error = float(np.std(terms, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return Estimate(estimator, value, value - z * error, value + z * error, level, n)


def _require_rows(stream: LoggedStream) -> None:
    if stream.n == 0:
        raise ValueError("no logged decisions to estimate from")


def ips(stream: LoggedStream, level: float = 0.9) -> Estimate:
    """Inverse propensity scoring (see the module docstring)."""
    _require_rows(stream)
    terms = stream.weights * stream.outcome
    return _interval(Estimator.IPS, float(terms.mean()), terms, level)


def snips(stream: LoggedStream, level: float = 0.9) -> Estimate:
    """Self-normalised IPS; with no weight on any row (the candidate never agrees) it is undefined.

    Raises:
        ValueError: every weight is zero.
    """
    _require_rows(stream)
    weights = stream.weights
    total = float(weights.sum())
    if total <= 0:
        raise ValueError("the candidate takes none of the logged actions: nothing to normalise by")
    value = float((weights * stream.outcome).sum() / total)
    terms = weights * (stream.outcome - value) / (total / stream.n)
    return _interval(Estimator.SNIPS, value, terms, level)


def doubly_robust_terms(stream: LoggedStream) -> Vector:
    """Per row: the outcome model's value of the candidate plus the weighted residual.

    Raises:
        ValueError: the stream has no outcome model.
    """
    if stream.predicted is None:
        raise ValueError("the doubly robust estimate needs an outcome model's predictions")
    rows = np.arange(stream.n)
    direct = (stream.candidate * stream.predicted).sum(axis=1)
    residual = stream.outcome - stream.predicted[rows, stream.chosen]
    return np.asarray(direct + stream.weights * residual, dtype=np.float64)


def doubly_robust(stream: LoggedStream, level: float = 0.9) -> Estimate:
    """The outcome model's value of the candidate, corrected by the weighted residuals.

    Raises:
        ValueError: the stream has no outcome model.
    """
    _require_rows(stream)
    terms = doubly_robust_terms(stream)
    return _interval(Estimator.DR, float(terms.mean()), terms, level)


def doubly_robust_difference(first: LoggedStream, second: LoggedStream, level: float = 0.9) -> Estimate:
    """DR of `first`'s candidate minus `second`'s on the same logged rows, paired row by row, so
    that what both would do alike adds no variance (two identical candidates differ by exactly 0).

    Raises:
        ValueError: the streams log different rows, or either has no outcome model.
    """
    _require_rows(first)
    same = first.n == second.n and np.array_equal(first.chosen, second.chosen)
    if not same or not np.array_equal(first.outcome, second.outcome):
        raise ValueError("a paired difference needs the same logged rows")
    terms = doubly_robust_terms(first) - doubly_robust_terms(second)
    if not np.any(terms):
        value = 0.0
        return Estimate(Estimator.DR, value, value, value, level, first.n)
    return _interval(Estimator.DR, float(terms.mean()), terms, level)


def estimate_all(stream: LoggedStream, level: float = 0.9) -> dict[Estimator, Estimate]:
    """Every estimator the stream allows: DR only with an outcome model, SNIPS only with weight."""
    found = {Estimator.IPS: ips(stream, level)}
    if float(stream.weights.sum()) > 0:
        found[Estimator.SNIPS] = snips(stream, level)
    if stream.predicted is not None:
        found[Estimator.DR] = doubly_robust(stream, level)
    return found


def effective_rows(stream: LoggedStream) -> float:
    """(sum w)^2 / sum w^2: how many rows the weighted estimate is worth."""
    weights = stream.weights
    squares = float((weights**2).sum())
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


def candidate_shares(candidate: Matrix) -> Vector:
    """The candidate's share of each action over the logged contexts (known, not estimated)."""
    return np.asarray(candidate.mean(axis=0), dtype=np.float64)
