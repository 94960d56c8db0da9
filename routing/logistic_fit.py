"""The solvers behind routing.scorers.fit_scorer: an L2-regularised logistic regression on
standardised rows, and the choice of its penalty on held-out rows.

Newton's method on narrow rows (a Hessian costs rows x width^2); L-BFGS on wide ones (a
step costs two passes over the rows), most of the way in single precision and the last
digits in double. The penalty is chosen along a path of fits, strongest penalty first:
each fit starts from the last one's weights and from its curvature memory, which a
quadratic penalty lets carry over exactly, so that the candidates after the first cost
a few passes each; the final fit on all rows starts from the chosen candidate's.

Pure: numpy only. Must not import the store, the tasks or providers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float64]
Matrix = NDArray[np.float64]
Block = NDArray[np.floating[Any]]
Pair = tuple[Vector, Vector, float]  # a step, the gradient's change along it, 1 / their product

STANDARDISE_ROWS = 2_048  # rows centred at a time: no full-size double temporary
SMALL_DATA = 2_000  # rows below which the penalty is chosen by 5-fold cross-validation
# OpenBLAS spreads a large matrix-vector product over threads; on a busy machine their hand-off
# costs several times the product itself. Blocks of this many rows stay on one thread.
BLOCK_ROWS = 512
MAX_STEPS = 2_000
NEWTON_WIDTH = 32
SINGLE_TOLERANCE = 1e-5  # what single-precision gradients resolve
SEARCH_TOLERANCE = 1e-5  # enough to compare penalties on held-out rows
FINAL_TOLERANCE = 1e-7
MEMORY = 10  # curvature pairs kept


def sigmoid(z: Vector) -> Vector:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0))), dtype=np.float64)


def penalties(width: int, l2: float) -> Vector:
    """The objective's quadratic term per coefficient (bias last, not shrunk)."""
    penalty = np.full(width + 1, 2.0 * l2)
    penalty[-1] = 1e-9
    return penalty


class _Objective:
    """Mean log-loss + l2 * |w|^2 (+ a vanishing penalty on the bias) on standardised rows, in
    the rows' precision (single: a quarter of the time). With `centre` (the columns' mean and
    spread), `rows` are the rows as given and the standardisation is folded into the weights,
    so that double precision needs no standardised copy."""

    def __init__(
        self, rows: Block, y: Vector, l2: float, centre: tuple[Vector, Vector] | None = None
    ) -> None:
        self.dtype = rows.dtype
        self.blocks = [rows[i : i + BLOCK_ROWS] for i in range(0, rows.shape[0], BLOCK_ROWS)]
        self.y = y
        self.penalty = penalties(rows.shape[1], l2)
        self.centre = centre

    def __call__(self, beta: Vector) -> tuple[float, Vector]:
        weights, offset = beta[:-1], float(beta[-1])
        if self.centre is not None:
            mean, scale = self.centre
            weights = weights / scale
            offset -= float(np.dot(mean, weights))
        typed = weights.astype(self.dtype)
        margin = np.concatenate([block @ typed for block in self.blocks]).astype(np.float64) + offset
        residual = (sigmoid(margin) - self.y) / self.y.shape[0]
        spread = residual.astype(self.dtype)
        gradient = np.zeros_like(beta)
        for index, block in enumerate(self.blocks):
            gradient[:-1] += block.T @ spread[index * BLOCK_ROWS : (index + 1) * BLOCK_ROWS]
        gradient[-1] = residual.sum()
        if self.centre is not None:
            gradient[:-1] = (gradient[:-1] - mean * gradient[-1]) / scale
        gradient += self.penalty * beta
        loss = float(np.mean(np.logaddexp(0.0, margin) - self.y * margin))
        return loss + 0.5 * float(np.dot(self.penalty, beta * beta)), gradient


@dataclass
class Memory:
    """L-BFGS's curvature pairs and the scale of its first guess; empty at the first fit."""

    pairs: list[Pair] = field(default_factory=list)
    scale: float | None = None

    def repenalised(self, old: Vector, new: Vector) -> Memory:
        """The same pairs for the objective with penalty `new` instead of `old`: the loss's part of
        each gradient change is unchanged, the penalty's part is (new - old) * step exactly."""
        pairs: list[Pair] = []
        for moved, change, _ in self.pairs:
            shifted = change + (new - old) * moved
            curvature = float(np.dot(moved, shifted))
            if curvature > 1e-16:
                pairs.append((moved, shifted, 1.0 / curvature))
        scale = None
        if pairs:
            moved, shifted, rho = pairs[-1]
            scale = 1.0 / (rho * float(np.dot(shifted, shifted)))
        return Memory(pairs, scale)


def lbfgs(objective: _Objective, beta: Vector, tolerance: float, memory: Memory) -> tuple[Vector, Memory]:
    """Weights (bias last) minimising `objective` by L-BFGS from `beta` and `memory`, until no
    gradient entry exceeds `tolerance` or the loss stops falling; and the memory at the end. The
    objective is strictly convex, so a backtracking (Armijo) line search keeps every curvature
    pair positive."""
    beta = beta.copy()
    loss, gradient = objective(beta)
    # Standardised columns bound the curvature by 1/4 + 2 * l2: a safe first step and scale.
    pairs = list(memory.pairs)
    scale = memory.scale if memory.scale is not None else 1.0 / (0.25 + float(objective.penalty[0]))
    for _ in range(MAX_STEPS):
        if float(np.max(np.abs(gradient))) <= tolerance:
            break
        direction = -_two_loop(gradient, pairs, scale)
        slope = float(np.dot(gradient, direction))
        if slope >= 0:  # carried curvature that no longer fits: start afresh
            pairs, direction = [], -gradient / (0.25 + float(objective.penalty[0]))
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
            pairs = [*pairs[-(MEMORY - 1) :], (moved, change, 1.0 / curvature)]
            scale = curvature / float(np.dot(change, change))
        beta, loss, gradient = beta + moved, new_loss, new_gradient
    return beta, Memory(pairs, scale)


def _two_loop(gradient: Vector, pairs: list[Pair], scale: float) -> Vector:
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


def newton(z: Matrix, y: Vector, l2: float, start: Vector | None, iterations: int = 25) -> Vector:
    """The same minimum as `lbfgs`, by Newton's method: for narrow rows, where a Hessian is cheap."""
    n, d = z.shape
    design = np.hstack([z, np.ones((n, 1))])
    beta = initial(y, d) if start is None else start.copy()
    penalty = penalties(d, l2) * n
    for _ in range(iterations):
        p = sigmoid(design @ beta)
        gradient = design.T @ (p - y) + penalty * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.max(np.abs(step))) < 1e-6:
            break
    return beta


def initial(y: Vector, width: int) -> Vector:
    """Zero weights and the bias at the log-odds of the labels' mean."""
    beta = np.zeros(width + 1)
    rate = min(max(float(np.mean(y)), 1e-6), 1 - 1e-6)
    beta[-1] = math.log(rate / (1 - rate))
    return beta


@dataclass
class Rows:
    """The training rows as given, their columns' mean and spread (1 where constant), and the rows
    in those units: in double precision for Newton on narrow rows (`z`), in single for L-BFGS on
    wide ones (`single`), made once."""

    given: Matrix
    mean: Vector
    scale: Vector
    z: Matrix | None = None
    single: NDArray[np.float32] | None = None

    @classmethod
    def of(cls, x: Matrix) -> Rows:
        n, d = x.shape
        mean = x.mean(axis=0)
        if d <= NEWTON_WIDTH:
            centred = x - mean
            scale = _scale(np.einsum("ij,ij->j", centred, centred) / n)
            return cls(x, mean, scale, z=centred / scale)
        single, squares = np.empty((n, d), dtype=np.float32), np.zeros(d)
        for i in range(0, n, STANDARDISE_ROWS):
            centred = x[i : i + STANDARDISE_ROWS] - mean
            squares += np.einsum("ij,ij->j", centred, centred)
            single[i : i + STANDARDISE_ROWS] = centred
        scale = _scale(squares / n)
        single /= scale.astype(np.float32)
        return cls(x, mean, scale, single=single)

    def margin(self, beta: Vector, rows: NDArray[np.bool_]) -> Vector:
        """beta's log-odds for the given rows, in double precision."""
        weights = beta[:-1] / self.scale
        return np.asarray(self.given[rows] @ weights + (beta[-1] - float(np.dot(self.mean, weights))))


def _scale(variance: Vector) -> Vector:
    spread = np.sqrt(variance)
    return np.where(spread > 1e-9, spread, 1.0)


@dataclass
class Start:
    """Where the final fit starts: weights near its minimum, and the curvature met on the way."""

    l2: float
    beta: Vector | None = None
    memory: Memory = field(default_factory=Memory)


def fit_final(rows: Rows, y: Vector, start: Start) -> Vector:
    """The fit at the chosen penalty on all rows, to FINAL_TOLERANCE. Wide rows: L-BFGS in single
    precision, then in double on the rows as given."""
    if rows.single is None:
        assert rows.z is not None
        return newton(rows.z, y, start.l2, start.beta)
    beta = initial(y, rows.single.shape[1]) if start.beta is None else start.beta
    beta, memory = lbfgs(_Objective(rows.single, y, start.l2), beta, SINGLE_TOLERANCE, start.memory)
    double = _Objective(rows.given, y, start.l2, (rows.mean, rows.scale))
    beta, _ = lbfgs(double, beta, FINAL_TOLERANCE, memory)
    return beta


def choose_l2(rows: Rows, y: Vector, grid: Sequence[float], seed: int) -> Start:
    """The grid penalty with the least held-out log-loss (5-fold below SMALL_DATA rows, else one
    fifth held out), with the fit at it to start the final fit from. Penalties are tried
    strongest first, each fit warm-started from the last (weights and, on wide rows, curvature);
    a held-out comparison needs less precision than the final fit, so on wide rows these fits
    run in single precision to a looser tolerance."""
    n = y.shape[0]
    if len(grid) == 1 or n < 10 or len(set(y.tolist())) < 2:
        return Start(float(max(grid)))
    order = np.random.default_rng(seed).permutation(n)
    folds = 5 if n < SMALL_DATA else 1
    candidates = sorted(grid, reverse=True)
    losses = np.zeros(len(candidates))
    path: list[Start] = []
    for fold in range(folds):
        held = np.zeros(n, dtype=np.bool_)
        held[order[fold::5]] = True
        path = _path(rows, y, held, candidates)
        for index, fitted in enumerate(path):
            assert fitted.beta is not None
            losses[index] += _log_loss(sigmoid(rows.margin(fitted.beta, held)), y[held])
    return path[int(np.argmin(losses))]


def _path(rows: Rows, y: Vector, held: NDArray[np.bool_], grid: list[float]) -> list[Start]:
    """One fit per penalty on the rows not held out, each from the last."""
    train_y = y[~held]
    fits: list[Start] = []
    if rows.single is None:
        assert rows.z is not None
        train, beta = rows.z[~held], None
        for l2 in grid:
            beta = newton(train, train_y, l2, beta)
            fits.append(Start(l2, beta))
        return fits
    train32 = rows.single[~held]
    width = train32.shape[1]
    beta, memory, last = initial(train_y, width), Memory(), None
    for l2 in grid:
        penalty = penalties(width, l2)
        if last is not None:
            memory = memory.repenalised(last, penalty)
        beta, memory = lbfgs(_Objective(train32, train_y, l2), beta, SEARCH_TOLERANCE, memory)
        fits.append(Start(l2, beta, memory))
        last = penalty
    return fits


def _log_loss(p: Vector, y: Vector) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
