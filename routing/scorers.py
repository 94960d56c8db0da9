"""Learned scorers: a job's features in, the probability that a tier's answer is good out.

Owns the feature vector of a prompt (cheap text features and optionally its
sentence embedding), `LogisticScorer` (an L2-regularised logistic
regression with its column standardisation, small enough to live in a policy
version as JSON), and `fit_scorer`, which trains one (routing.logistic_fit: Newton's method on narrow rows,
L-BFGS in single precision on wide ones, the same minimum) and picks its regularisation on a held-out
slice of the training rows. Scoring one job is a dot product: microseconds once the job is embedded.

Pure: numpy and pydantic only. Must not import the store, the tasks or providers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from tierflow.routing.logistic_fit import Rows, choose_l2, fit_final, folds, sigmoid

Vector = NDArray[np.float64]
Matrix = NDArray[np.float64]

NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
OPTION_LINE = re.compile(r"^\s*\(?[A-Ha-h][.)]\s", re.MULTILINE)
MATH_OPERATOR = re.compile(r"[=+*/^%<>]|\\frac|\bsqrt\b")
CODE_MARKER = re.compile(r"```|\bdef |\bclass |\breturn\b|;\s*$|\{\s*$", re.MULTILINE)

CHEAP_FEATURES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "digit_share",
    "log_numbers",
    "log_lines",
    "questions",
    "options",
    "math_operators",
    "code",
    "upper_share",
)
# A job's kind is not a feature: the policy keeps one learned routing per kind, keyed by the kind's
# name, so a scorer's width is the same whichever kinds are declared, and declaring or removing a
# kind changes no other kind's scorer. (The one-hot kind columns this replaced were constant within
# each kind's scorer, so they carried no weight: dropping them leaves every fit the same.)
L2_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # per-row penalty on standardised weights


def cheap_features(text: str) -> Vector:
    """What a prompt's surface says about its difficulty, in CHEAP_FEATURES order."""
    chars = max(len(text), 1)
    words = len(text.split())
    surface = [
        math.log1p(len(text)),
        math.log1p(words),
        sum(c.isdigit() for c in text) / chars,
        math.log1p(len(NUMBER.findall(text))),
        math.log1p(text.count("\n")),
        float(min(text.count("?"), 5)),
        float(min(len(OPTION_LINE.findall(text)), 8)),
        math.log1p(len(MATH_OPERATOR.findall(text))),
        math.log1p(len(CODE_MARKER.findall(text))),
        sum(c.isupper() for c in text) / chars,
    ]
    return np.array(surface, dtype=np.float64)


def prompt_features(texts: Sequence[str], embeddings: Matrix | None) -> Matrix:
    """One row per prompt (of one kind): its cheap features, then its embedding when one is given."""
    cheap = np.array([cheap_features(t) for t in texts], dtype=np.float64)
    cheap = cheap.reshape(len(texts), len(CHEAP_FEATURES))
    if embeddings is None:
        return cheap
    return np.hstack([cheap, np.asarray(embeddings, dtype=np.float64)])


class LogisticScorer(BaseModel):
    """P(good) = sigmoid(w . (x - mean) / scale + b), stored as plain numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    l2: float
    rows: int  # how many training rows it saw

    # The standardisation folded into the weights, once: scoring a job is then one dot product.
    _direction: Vector = PrivateAttr()
    _offset: float = PrivateAttr()

    @model_validator(mode="after")
    def _same_width(self) -> LogisticScorer:
        if not len(self.weights) == len(self.mean) == len(self.scale):
            raise ValueError("weights, mean and scale must have one entry per feature")
        return self

    def __eq__(self, other: object) -> bool:  # the fields decide; the folded copy follows from them
        return isinstance(other, LogisticScorer) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def _fields(self) -> tuple[object, ...]:
        return (self.weights, self.bias, self.mean, self.scale, self.l2, self.rows)

    def model_post_init(self, context: object, /) -> None:
        direction = np.array(self.weights, dtype=np.float64) / np.array(self.scale, dtype=np.float64)
        self._direction = direction
        self._offset = float(self.bias - np.dot(np.array(self.mean, dtype=np.float64), direction))

    @property
    def width(self) -> int:
        return len(self.weights)

    def probability(self, features: Matrix | Vector) -> Vector:
        """P(good) for each row of `features` (a single vector gives a length-1 result)."""
        rows = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if rows.shape[1] != self.width:
            raise ValueError(f"scorer takes {self.width} features, got {rows.shape[1]}")
        return _sigmoid(rows @ self._direction + self._offset)


def _sigmoid(z: Vector) -> Vector:
    return sigmoid(z)


def fit_scorer(
    features: Matrix,
    good: NDArray[np.bool_] | NDArray[np.float64],
    l2_grid: Sequence[float] = L2_GRID,
    seed: int = 0,
) -> LogisticScorer:
    """Fit P(good | features); the penalty is the grid value with the best held-out log-loss.

    `good` may be graded (each target in [0, 1]): the fit is then the expected quality, by the
    same log-loss with fractional targets.

    Raises:
        ValueError: no rows, or rows and labels of different lengths.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(good, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need rows of features and one label per row, got {x.shape} and {y.shape}")
    order, held_out = folds(x.shape[0], seed)
    rows = Rows.of(x, y, order)
    start = choose_l2(rows, held_out, l2_grid)
    beta = fit_final(rows, start)
    return LogisticScorer(
        weights=tuple(beta[:-1].tolist()),
        bias=float(beta[-1]),
        mean=tuple(rows.mean.tolist()),
        scale=tuple(rows.scale.tolist()),
        l2=start.l2,
        rows=int(x.shape[0]),
    )


def constant_scorer(width: int, good: float, rows: int) -> LogisticScorer:
    """A scorer that ignores the features: the Laplace-smoothed success rate, (good + 1) / (rows + 2).

    For a tier whose outcomes so far were all good (or all bad): a logistic fit would diverge.
    """
    rate = (good + 1) / (rows + 2)
    return LogisticScorer(
        weights=(0.0,) * width,
        bias=math.log(rate / (1 - rate)),
        mean=(0.0,) * width,
        scale=(1.0,) * width,
        l2=0.0,
        rows=rows,
    )
