"""fit_scorer's solvers reach the model a textbook Newton fit of the same objective reaches:
the same chosen penalty, the same weights, the same log-loss; and the penalty they choose
predicts new rows as well as the exhaustive search does."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.logistic_fit import FINAL_TOLERANCE, NEWTON_WIDTH, SMALL_DATA
from tierflow.routing.scorers import L2_GRID, LogisticScorer, fit_scorer


def _newton(z: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Mean log-loss + l2 * |w|^2 (bias unshrunk), Newton's method run to a tiny step."""
    n, d = z.shape
    design = np.hstack([z, np.ones((n, 1))])
    beta = np.zeros(d + 1)
    penalty = np.full(d + 1, 2.0 * l2 * n)
    penalty[-1] = 1e-9 * n
    for _ in range(50):
        p = 1 / (1 + np.exp(-(design @ beta)))
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, design.T @ (p - y) + penalty * beta)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _reference(x: np.ndarray, good: np.ndarray) -> tuple[float, np.ndarray]:
    """The penalty the held-out rows prefer and the weights at it, as fit_scorer documents it."""
    y = good.astype(np.float64)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    n = len(y)
    order = np.random.default_rng(0).permutation(n)
    penalties = sorted(L2_GRID, reverse=True)
    losses = np.zeros(len(penalties))
    for fold in range(5 if n < SMALL_DATA else 1):
        held = np.zeros(n, dtype=np.bool_)
        held[order[fold::5]] = True
        for index, l2 in enumerate(penalties):
            beta = _newton(z[~held], y[~held], l2)
            losses[index] += _log_loss(1 / (1 + np.exp(-(z[held] @ beta[:-1] + beta[-1]))), y[held])
    l2 = penalties[int(np.argmin(losses))]
    return l2, _newton(z, y, l2)


def _correlated(rows: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Wide rows driven by a few factors, as sentence embeddings are: an ill-conditioned fit."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(rows, 8))
    x = factors @ rng.normal(size=(8, width)) + 0.3 * rng.normal(size=(rows, width)) + 2.0
    good = rng.random(rows) < 1 / (1 + np.exp(-(factors @ rng.normal(size=8))))
    return x, good


@pytest.mark.parametrize(
    ("rows", "width"),
    [(3000, NEWTON_WIDTH + 40), (600, NEWTON_WIDTH + 40), (3000, 10)],
    ids=["wide-held-out-fifth", "wide-five-folds", "narrow"],
)
def test_the_fit_matches_newton_on_the_same_objective(rows: int, width: int) -> None:
    x, good = _correlated(rows, width, seed=rows + width)
    scorer = fit_scorer(x, good)
    l2, beta = _reference(x, good)
    assert scorer.l2 == l2
    assert np.max(np.abs(np.array(scorer.weights) - beta[:-1])) < 1e-5
    assert abs(scorer.bias - beta[-1]) < 1e-5
    expected = LogisticScorer(
        weights=tuple(beta[:-1]), bias=float(beta[-1]), mean=scorer.mean, scale=scorer.scale, l2=l2, rows=rows
    )
    y = good.astype(np.float64)
    loss, reference_loss = _log_loss(scorer.probability(x), y), _log_loss(expected.probability(x), y)
    assert abs(loss - reference_loss) < 1e-6
    # What both minimise: the penalised loss; the fit may not stop measurably above Newton's minimum.
    penalised = loss + l2 * float(np.sum(np.square(scorer.weights)))
    assert penalised - (reference_loss + l2 * float(np.sum(np.square(beta[:-1])))) < 1e-9


def test_a_fixed_penalty_is_fitted_as_given() -> None:
    x, good = _correlated(2500, NEWTON_WIDTH + 8, seed=7)
    scorer = fit_scorer(x, good, (0.1,))
    assert scorer.l2 == 0.1
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    reference = _newton(z, good.astype(np.float64), 0.1)
    assert np.max(np.abs(np.array(scorer.weights) - reference[:-1])) < 1e-5


@pytest.mark.parametrize(("rows", "width"), [(3000, NEWTON_WIDTH + 40), (2500, 200)])
def test_the_single_precision_fit_stops_at_the_double_precision_minimum(rows: int, width: int) -> None:
    """Its gradient in double precision is as small as the final tolerance asks: the fit does not
    stall where a single-precision loss stops telling better steps from worse (~1e-5)."""
    x, good = _correlated(rows, width, seed=width)
    scorer = fit_scorer(x, good)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    weights, y = np.array(scorer.weights), good.astype(np.float64)
    residual = 1 / (1 + np.exp(-(z @ weights + scorer.bias))) - y
    gradient = np.append(z.T @ residual / rows + 2 * scorer.l2 * weights, residual.mean())
    assert np.max(np.abs(gradient)) < 2 * FINAL_TOLERANCE


def _model_rows(rows: int, fresh: int, width: int, seed: int) -> tuple[np.ndarray, ...]:
    """Training rows and fresh rows from one model (wide, correlated, as embeddings are)."""
    rng = np.random.default_rng(seed)
    mixing, coefficients = rng.normal(size=(8, width)), rng.normal(size=8)
    factors = rng.normal(size=(rows + fresh, 8))
    x = factors @ mixing + 0.5 * rng.normal(size=(rows + fresh, width))
    good = rng.random(rows + fresh) < 1 / (1 + np.exp(-(factors @ coefficients)))
    return x[:rows], good[:rows], x[rows:], good[rows:]


@pytest.mark.parametrize(("rows", "width"), [(3000, 120), (800, 120)], ids=["held-out-fifth", "five-folds"])
def test_the_chosen_penalty_predicts_new_rows_as_the_exhaustive_search_does(rows: int, width: int) -> None:
    """Against every grid penalty fitted to convergence on all rows: the chosen fit's accuracy on
    rows it never saw is within a point of the best of them, and its log-loss matches the
    exhaustive search's choice."""
    x, good, fresh_x, fresh_good = _model_rows(rows, 4000, width, seed=rows)
    scorer = fit_scorer(x, good)
    mean, spread = x.mean(axis=0), x.std(axis=0)
    accuracies = {}
    for l2 in L2_GRID:
        beta = _newton((x - mean) / spread, good.astype(np.float64), l2)
        p = 1 / (1 + np.exp(-(((fresh_x - mean) / spread) @ beta[:-1] + beta[-1])))
        accuracies[l2] = float(np.mean((p > 0.5) == fresh_good))
    p = scorer.probability(fresh_x)
    assert float(np.mean((p > 0.5) == fresh_good)) >= max(accuracies.values()) - 0.01
    l2, beta = _reference(x, good)
    reference = 1 / (1 + np.exp(-(((fresh_x - mean) / spread) @ beta[:-1] + beta[-1])))
    y = fresh_good.astype(np.float64)
    assert abs(_log_loss(p, y) - _log_loss(reference, y)) < 1e-6
