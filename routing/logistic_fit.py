"""The solvers behind routing.scorers.fit_scorer: an L2-regularised logistic regression on
standardised rows, and the choice of its penalty on held-out rows.

Newton's method on narrow rows (a Hessian costs rows x width^2); L-BFGS on wide ones (a
step costs two products with the rows), in single precision: its gradients are good to about
1e-8, far inside the final tolerance, and where the loss's own rounding hides the
decrease of a step the line search measures it by the gradients. The penalty is chosen
along a path of fits, strongest penalty first: each fit starts from the last one's
weights and from its curvature memory, which a quadratic penalty lets carry over
exactly, so that the candidates after the first cost a few passes each; the final fit on
all rows starts from the chosen candidate's.

Pure: numpy only. Must not import the store, the tasks or providers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float64]
Matrix = NDArray[np.float64]
Block = NDArray[np.floating[Any]]
Single = NDArray[np.float32]
Mask = NDArray[np.bool_]
Pair = tuple[Vector, Vector, float]  # a step, the gradient's change along it, 1 / their product
Array = TypeVar("Array", bound=NDArray[Any])

STANDARDISE_ROWS = 128  # rows centred at a time, in one reused buffer
SMALL_DATA = 2_000  # rows below which the penalty is chosen by 5-fold cross-validation
MAX_STEPS = 2_000
NEWTON_WIDTH = 32
SEARCH_TOLERANCE = 1e-4  # held-out log-losses within about 1e-4 of exact fits: enough to compare penalties
FINAL_TOLERANCE = 1e-7
# Below this expected decrease, a single-precision loss (rounding ~1e-9) no longer tells a step
# that lowers it from one that does not: the gradients at both ends measure the decrease instead.
LOSS_RESOLUTION = 1e-7
MEMORY = 10  # curvature pairs kept


def sigmoid(z: Vector) -> Vector:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0))), dtype=np.float64)


def penalties(width: int, l2: float) -> Vector:
    """The objective's quadratic term per coefficient (bias last, not shrunk)."""
    penalty = np.full(width + 1, 2.0 * l2)
    penalty[-1] = 1e-9
    return penalty


class _Objective:
    """Mean log-loss + l2 * |w|^2 (+ a vanishing penalty on the bias) on standardised rows in
    single precision.

    The two products with the rows go through einsum, not BLAS: within about 20% of one BLAS
    thread, and OpenBLAS's threads, which spin between calls, took twice the CPU for half the wall
    time on an idle machine and several times both on a busy one."""

    def __init__(self, rows: Single, y: Vector, l2: float) -> None:
        self.rows = rows
        self.y = y
        self.penalty = penalties(rows.shape[1], l2)

    def __call__(self, beta: Vector) -> tuple[float, Vector]:
        margin = _margin(self.rows, beta)
        # -log P(y) = log1p(e^-m) + (1 - y) m, and P(good) = 1 / (1 + e^-m): one exponential.
        tail = np.exp(-np.clip(margin, -300.0, 300.0))
        loss = float(np.sum(np.log1p(tail))) + float(np.dot(1.0 - self.y, margin))
        residual = 1.0 / (1.0 + tail) - self.y
        gradient = np.empty_like(beta)
        gradient[:-1] = np.einsum("i,ij->j", residual.astype(np.float32), self.rows)
        gradient[-1] = float(residual.sum())
        gradient /= self.y.shape[0]
        gradient += self.penalty * beta
        return loss / self.y.shape[0] + 0.5 * float(np.dot(self.penalty, beta * beta)), gradient


def _margin(rows: Block, beta: Vector) -> Vector:
    """beta's log-odds for standardised rows (by einsum: see _Objective), in double precision."""
    product = np.einsum("ij,j->i", rows, beta[:-1].astype(rows.dtype))
    return np.asarray(product, dtype=np.float64) + float(beta[-1])


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
    gradient entry exceeds `tolerance` or no step lowers the loss; and the memory at the end. The
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
        if float(np.dot(gradient, direction)) >= 0:  # carried curvature that no longer fits: start afresh
            pairs, direction = [], -gradient / (0.25 + float(objective.penalty[0]))
        found = _line_search(objective, beta, loss, gradient, direction)
        if found is None:  # rounding, not curvature, limits the loss from here
            break
        moved, loss, new_gradient = found
        change = new_gradient - gradient
        curvature = float(np.dot(moved, change))
        if curvature > 1e-16:
            pairs = [*pairs[-(MEMORY - 1) :], (moved, change, 1.0 / curvature)]
            scale = curvature / float(np.dot(change, change))
        beta, gradient = beta + moved, new_gradient
    return beta, Memory(pairs, scale)


def _line_search(
    objective: _Objective, beta: Vector, loss: float, gradient: Vector, direction: Vector
) -> tuple[Vector, float, Vector] | None:
    """The first of the steps 1, 1/2, 1/4, ... along `direction` that lowers the loss by at least
    1e-4 of what its slope promises: the step, the loss and the gradient there. A decrease too
    small for the loss to resolve is measured by the gradients at both ends (the trapezoid rule,
    exact on a quadratic, which the loss is that close to its minimum)."""
    slope, step = float(np.dot(gradient, direction)), 1.0
    while step > 1e-10:
        moved = step * direction
        new_loss, new_gradient = objective(beta + moved)
        promised = step * slope
        if -promised > LOSS_RESOLUTION:
            decrease = new_loss - loss
        else:
            decrease = 0.5 * float(np.dot(gradient + new_gradient, moved))
        if decrease <= 1e-4 * promised:
            return moved, new_loss, new_gradient
        step *= 0.5
    return None


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
    """The training rows standardised (their columns' mean and spread, 1 where constant), made once:
    in double precision for Newton on narrow rows (`z`), in single for L-BFGS on wide ones
    (`single`); in the order `folds` chose, with the labels `y` in the same order."""

    y: Vector
    mean: Vector
    scale: Vector
    z: Matrix | None = None
    single: Single | None = None

    @classmethod
    def of(cls, x: Matrix, y: Vector, order: NDArray[np.intp]) -> Rows:
        n, d = x.shape
        mean = x.mean(axis=0)
        if d <= NEWTON_WIDTH:
            centred = x[order] - mean
            scale = _scale(np.einsum("ij,ij->j", centred, centred) / n)
            return cls(y[order], mean, scale, z=centred / scale)
        single, squares = np.empty((n, d), dtype=np.float32), np.zeros(d)
        buffer = np.empty((STANDARDISE_ROWS, d))
        for i in range(0, n, STANDARDISE_ROWS):
            chunk = order[i : i + STANDARDISE_ROWS]
            centred = buffer[: chunk.shape[0]]
            np.subtract(x[chunk], mean, out=centred)
            squares += np.einsum("ij,ij->j", centred, centred)
            single[i : i + STANDARDISE_ROWS] = centred
        scale = _scale(squares / n)
        single *= (1.0 / scale).astype(np.float32)
        return cls(y[order], mean, scale, single=single)

    @property
    def standardised(self) -> Block:
        """Whichever of `z` and `single` was made."""
        made = self.z if self.z is not None else self.single
        assert made is not None
        return made


def _scale(variance: Vector) -> Vector:
    spread = np.sqrt(variance)
    return np.where(spread > 1e-9, spread, 1.0)


def folds(n: int, seed: int) -> tuple[NDArray[np.intp], list[Mask]]:
    """The order to put the rows in, and each fold's held-out rows in that order: every fifth row
    of a random permutation, five folds below SMALL_DATA rows, else one, whose rows then go last
    so that the rows it trains on and the rows it holds out are each one slice, not a copy."""
    order = np.random.default_rng(seed).permutation(n)
    held = [np.zeros(n, dtype=np.bool_) for _ in range(5 if n < SMALL_DATA else 1)]
    for fold, mask in enumerate(held):
        mask[order[fold::5]] = True
    if len(held) > 1:
        return np.arange(n), held
    tail = np.zeros(n, dtype=np.bool_)
    tail[n - int(held[0].sum()) :] = True
    return np.concatenate([np.flatnonzero(~held[0]), np.flatnonzero(held[0])]), [tail]


def _part(rows: Array, keep: Mask) -> Array:
    """The rows where `keep` is true: a view when they are one run."""
    index = np.flatnonzero(keep)
    if index.size and index[-1] - index[0] + 1 == index.size:
        return cast(Array, rows[index[0] : index[-1] + 1])
    return cast(Array, rows[index])


@dataclass
class Start:
    """Where the final fit starts: weights near its minimum, and the curvature met on the way."""

    l2: float
    beta: Vector | None = None
    memory: Memory = field(default_factory=Memory)


def fit_final(rows: Rows, start: Start) -> Vector:
    """The fit at the chosen penalty on all rows, to FINAL_TOLERANCE."""
    if rows.single is None:
        assert rows.z is not None
        return newton(rows.z, rows.y, start.l2, start.beta)
    beta = initial(rows.y, rows.single.shape[1]) if start.beta is None else start.beta
    beta, _ = lbfgs(_Objective(rows.single, rows.y, start.l2), beta, FINAL_TOLERANCE, start.memory)
    return beta


def choose_l2(rows: Rows, held_out: list[Mask], grid: Sequence[float]) -> Start:
    """The grid penalty with the least held-out log-loss summed over the folds, with the fit at
    it to start the final fit from. Penalties are tried strongest first, each fit warm-started
    from the last (weights and, on wide rows, curvature); a held-out comparison needs less
    precision than the final fit, so these fits stop at a looser tolerance."""
    y = rows.y
    if len(grid) == 1 or y.shape[0] < 10 or len(set(y.tolist())) < 2:
        return Start(float(max(grid)))
    candidates = sorted(grid, reverse=True)
    losses = np.zeros(len(candidates))
    path: list[Start] = []
    for held in held_out:
        path = _path(rows, ~held, candidates)
        standardised = _part(rows.standardised, held)
        for index, fitted in enumerate(path):
            assert fitted.beta is not None
            losses[index] += _log_loss(sigmoid(_margin(standardised, fitted.beta)), _part(y, held))
    return path[int(np.argmin(losses))]


def _path(rows: Rows, train: Mask, grid: list[float]) -> list[Start]:
    """One fit per penalty on the `train` rows, each from the last."""
    train_y = _part(rows.y, train)
    fits: list[Start] = []
    if rows.single is None:
        assert rows.z is not None
        z, beta = _part(rows.z, train), None
        for l2 in grid:
            beta = newton(z, train_y, l2, beta)
            fits.append(Start(l2, beta))
        return fits
    train32 = _part(rows.single, train)
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
