"""Learned scorers: a job's features in, the probability that a tier's answer is good out.

Owns the feature vector of a prompt (cheap text features and optionally its
sentence embedding), `LogisticScorer` (an L2-regularised logistic
regression with its column standardisation, small enough to live in a policy
version as JSON), and `fit_scorer`, which trains one (Newton's method on narrow rows, L-BFGS on
wide ones: the same minimum) and picks its regularisation on a held-out slice of the training
rows. Scoring one job is a dot product: microseconds once the job is embedded.

Pure: numpy and pydantic only. Must not import the store, the tasks or providers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

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


# OpenBLAS spreads a large matrix-vector product over threads; on a busy machine their hand-off
# costs several times the product itself. Blocks of this many rows stay on one thread.
BLOCK_ROWS = 512
MAX_STEPS = 2_000
NEWTON_WIDTH = 32
SINGLE_TOLERANCE = 1e-5  # what single-precision gradients resolve; enough to compare penalties


class _Objective:
    """Mean log-loss + l2 * |w|^2 (+ a vanishing penalty on the bias) on standardised rows."""

    def __init__(self, z: Matrix, y: Vector, l2: float, single: bool = False) -> None:
        self.dtype: type[np.floating[Any]] = (
            np.float32 if single else np.float64
        )  # single: a quarter of the time
        rows: NDArray[np.floating[Any]] = z.astype(self.dtype, copy=False)
        self.blocks = [rows[i : i + BLOCK_ROWS] for i in range(0, z.shape[0], BLOCK_ROWS)]
        self.y = y
        self.penalty = np.full(z.shape[1] + 1, 2.0 * l2)
        self.penalty[-1] = 1e-9  # the bias is not shrunk

    def __call__(self, beta: Vector) -> tuple[float, Vector]:
        weights = beta[:-1].astype(self.dtype)
        margin = np.concatenate([block @ weights for block in self.blocks]).astype(np.float64) + beta[-1]
        residual = (_sigmoid(margin) - self.y) / self.y.shape[0]
        spread = residual.astype(self.dtype)
        gradient = np.zeros_like(beta)
        for index, block in enumerate(self.blocks):
            gradient[:-1] += block.T @ spread[index * BLOCK_ROWS : (index + 1) * BLOCK_ROWS]
        gradient[-1] = residual.sum()
        gradient += self.penalty * beta
        loss = float(np.mean(np.logaddexp(0.0, margin) - self.y * margin))
        return loss + 0.5 * float(np.dot(self.penalty, beta * beta)), gradient


def _fit(
    z: Matrix, y: Vector, l2: float, start: Vector | None, tolerance: float = 1e-7, single: bool = False
) -> Vector:
    """Weights (bias last) minimising `_Objective` by L-BFGS, until no gradient entry exceeds
    `tolerance` or the loss stops falling. The objective is strictly convex, so a backtracking
    (Armijo) line search keeps every curvature pair positive."""
    objective = _Objective(z, y, l2, single)
    beta = _start(y, z.shape[1]) if start is None else start.copy()
    loss, gradient = objective(beta)
    # Standardised columns bound the curvature by 1/4 + 2 * l2: a safe first step and scale.
    scale = 1.0 / (0.25 + 2.0 * l2)
    pairs: list[tuple[Vector, Vector, float]] = []
    for _ in range(MAX_STEPS):
        if float(np.max(np.abs(gradient))) <= tolerance:
            break
        direction = -_two_loop(gradient, pairs, scale)
        slope = float(np.dot(gradient, direction))
        step, (new_loss, new_gradient) = 1.0, objective(beta + direction)
        while new_loss > loss + 1e-4 * step * slope and step > 1e-10:
            step *= 0.5
            new_loss, new_gradient = objective(beta + step * direction)
        if new_loss >= loss:  # rounding, not curvature, limits the loss from here
            break
        moved, change = step * direction, new_gradient - gradient
        curvature = float(np.dot(moved, change))
        if curvature > 1e-16:
            pairs = [*pairs[-9:], (moved, change, 1.0 / curvature)]
            scale = curvature / float(np.dot(change, change))
        beta, loss, gradient = beta + moved, new_loss, new_gradient
    return beta


def _newton(z: Matrix, y: Vector, l2: float, start: Vector | None, iterations: int = 25) -> Vector:
    """The same minimum as `_fit`, by Newton's method: for narrow rows, where a Hessian is cheap."""
    n, d = z.shape
    design = np.hstack([z, np.ones((n, 1))])
    beta = _start(y, d) if start is None else start.copy()
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


def _solve(
    z: Matrix, y: Vector, l2: float, start: Vector | None, tolerance: float = 1e-7, single: bool = False
) -> Vector:
    """Newton's method up to NEWTON_WIDTH features (a Hessian costs rows x width^2), else L-BFGS
    (a step costs two passes over the rows)."""
    if z.shape[1] <= NEWTON_WIDTH:
        return _newton(z, y, l2, start)
    if not single:  # most of the way in single precision, the last digits in double
        start = _fit(z, y, l2, start, SINGLE_TOLERANCE, single=True)
    return _fit(z, y, l2, start, tolerance, single)


def _two_loop(gradient: Vector, pairs: list[tuple[Vector, Vector, float]], scale: float) -> Vector:
    """L-BFGS's inverse-Hessian estimate times `gradient`."""
    q = gradient.copy()
    alphas = []
    for moved, change, rho in reversed(pairs):
        alpha = rho * float(np.dot(moved, q))
        q -= alpha * change
        alphas.append(alpha)
    q *= scale
    for (moved, change, rho), alpha in zip(pairs, reversed(alphas), strict=True):
        q += (alpha - rho * float(np.dot(change, q))) * moved
    return q


def _start(y: Vector, width: int) -> Vector:
    """Zero weights and the bias at the log-odds of the labels' mean."""
    beta = np.zeros(width + 1)
    rate = min(max(float(np.mean(y)), 1e-6), 1 - 1e-6)
    beta[-1] = math.log(rate / (1 - rate))
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
    spread = x.std(axis=0)
    scale = np.where(spread > 1e-9, spread, 1.0)
    z = (x - mean) / scale
    l2, start = _choose_l2(z, y, l2_grid, seed)
    beta = _solve(z, y, l2, start)
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


def _choose_l2(z: Matrix, y: Vector, grid: Sequence[float], seed: int) -> tuple[float, Vector | None]:
    """The grid penalty with the least held-out log-loss (5-fold below SMALL_DATA rows, else one
    fifth held out), and a fit at it to start the final fit from. Penalties are tried strongest
    first, each fit warm-started from the last; a held-out comparison needs less precision than
    the final fit, so these fits run in single precision to a looser tolerance."""
    n = z.shape[0]
    if len(grid) == 1 or n < 10 or len(set(y.tolist())) < 2:
        return float(max(grid)), None
    order = np.random.default_rng(seed).permutation(n)
    folds = 5 if n < SMALL_DATA else 1
    penalties = sorted(grid, reverse=True)
    losses = np.zeros(len(penalties))
    fits: list[Vector] = []
    for fold in range(folds):
        held = np.zeros(n, dtype=np.bool_)
        held[order[fold::5]] = True
        train, train_y, test, test_y = z[~held], y[~held], z[held], y[held]
        start, fits = None, []
        for index, l2 in enumerate(penalties):
            start = _solve(train, train_y, l2, start, SINGLE_TOLERANCE, single=True)
            fits.append(start)
            losses[index] += _log_loss(_sigmoid(test @ start[:-1] + start[-1]), test_y)
    best = int(np.argmin(losses))
    return float(penalties[best]), fits[best]
