"""Learned scorers: a job's features in, the probability that a tier's answer is good out.

Owns the feature vector of a prompt (cheap text features and optionally its
sentence embedding), `LogisticScorer` (an L2-regularised logistic
regression with its column standardisation, small enough to live in a policy
version as JSON), and `fit_scorer`, which trains one by Newton's method and picks
its regularisation on a held-out slice of the training rows. Scoring one job is a
dot product: microseconds once the job is embedded.

Pure: numpy and pydantic only. Must not import the store, the tasks or providers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

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
SMALL_DATA = 2_000  # rows below which the penalty is chosen by 5-fold cross-validation
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
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0))), dtype=np.float64)


def _newton(z: Matrix, y: Vector, l2: float, start: Vector | None, iterations: int = 25) -> Vector:
    """Weights (bias last) minimising mean log-loss + l2 * |w|^2 on standardised rows `z`."""
    n, d = z.shape
    design = np.hstack([z, np.ones((n, 1))])
    beta = np.zeros(d + 1) if start is None else start.copy()
    penalty = np.full(d + 1, 2.0 * l2 * n)
    penalty[-1] = 1e-9 * n  # the bias is not shrunk
    for _ in range(iterations):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (p - y) + penalty * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.max(np.abs(step))) < 1e-6:
            break
    return beta


def _log_loss(p: Vector, y: Vector) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


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
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0)
    z = (x - mean) / scale
    l2 = _choose_l2(z, y, l2_grid, seed)
    beta = _newton(z, y, l2, None)
    return LogisticScorer(
        weights=tuple(float(v) for v in beta[:-1]),
        bias=float(beta[-1]),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        l2=l2,
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


def _choose_l2(z: Matrix, y: Vector, grid: Sequence[float], seed: int) -> float:
    """The grid penalty with the least held-out log-loss: 5-fold below SMALL_DATA rows, else one
    fifth held out. Penalties are tried strongest first, each fit warm-started from the last."""
    n = z.shape[0]
    if len(grid) == 1 or n < 10 or len(set(y.tolist())) < 2:
        return float(max(grid))
    order = np.random.default_rng(seed).permutation(n)
    folds = 5 if n < SMALL_DATA else 1
    losses = np.zeros(len(grid))
    for fold in range(folds):
        held = np.zeros(n, dtype=np.bool_)
        held[order[fold::5]] = True
        start = None
        for index, l2 in enumerate(sorted(grid, reverse=True)):
            beta = _newton(z[~held], y[~held], l2, start)
            start = beta
            design = np.hstack([z[held], np.ones((int(held.sum()), 1))])
            losses[index] += _log_loss(_sigmoid(design @ beta), y[held])
    return float(sorted(grid, reverse=True)[int(np.argmin(losses))])
