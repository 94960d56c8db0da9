"""The k-nearest-neighbour router of `tierflow eval routing --router knn`, pure numpy.

Owns `NeighbourRouter` (its name on the command line), `fit_knn` and
`KnnRouter.scores`: a prompt's score (higher = send to large) is the mean gain of
its k most similar training prompts by cosine similarity of their embeddings,
where a prompt's gain is the large tier's quality minus the small tier's, both in
[0, 1] (right or wrong, or a graded score mapped by its file's range). So it
learns from correctness and graded files alike, and mixes them.

k is tuned on the training rows alone: each candidate is scored by the APGR of
the leave-one-out scores of the training prompts (`routing.metrics`), the
largest k winning ties. The test rows never choose it.

Must not import anything but numpy and routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from tierflow.routing.metrics import PromptOutcomes, evaluate_scores

K_GRID: tuple[int, ...] = (5, 10, 20, 40, 80, 160)
ROWS_PER_BLOCK = 1024  # similarity rows computed at once: 1024 x n float32


class NeighbourRouter(str, Enum):
    KNN = "knn"


Matrix = NDArray[np.float64]
Vector = NDArray[np.float64]


@dataclass(frozen=True)
class KnnRouter:
    """Training prompts' unit embeddings, their gains, and the k chosen."""

    embedding: NDArray[np.float32]
    gain: Vector
    k: int

    def scores(self, embedding: Matrix) -> Vector:
        """The mean gain of each row's k nearest training prompts."""
        neighbours = nearest(_unit(embedding), self.embedding, self.k)
        return np.asarray(self.gain[neighbours].mean(axis=1), dtype=np.float64)


def _unit(matrix: Matrix | NDArray[np.float32]) -> NDArray[np.float32]:
    rows = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


def nearest(
    queries: NDArray[np.float32], keys: NDArray[np.float32], k: int, exclude_self: bool = False
) -> NDArray[np.intp]:
    """The positions in `keys` of each query's `k` most similar rows, most similar first.

    With `exclude_self`, queries are `keys` themselves and a row is never its own neighbour.
    """
    k = min(k, keys.shape[0] - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError("need at least one neighbour")
    found = np.zeros((queries.shape[0], k), dtype=np.intp)
    for start in range(0, queries.shape[0], ROWS_PER_BLOCK):
        similarity = queries[start : start + ROWS_PER_BLOCK] @ keys.T
        if exclude_self:
            rows = np.arange(similarity.shape[0])
            similarity[rows, rows + start] = -np.inf
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1, kind="stable")
        found[start : start + similarity.shape[0]] = np.take_along_axis(top, order, axis=1)
    return found


def leave_one_out_apgr(
    embedding: NDArray[np.float32], small: Vector, large: Vector, ks: Sequence[int]
) -> dict[int, float]:
    """Each k's APGR on the training rows, every row scored by its neighbours but itself."""
    neighbours = nearest(embedding, embedding, max(ks), exclude_self=True)
    gain = large - small
    outcomes = PromptOutcomes(small, large, np.zeros_like(small), np.zeros_like(large))
    cumulative = np.cumsum(gain[neighbours], axis=1)
    found: dict[int, float] = {}
    for k in ks:
        width = min(k, neighbours.shape[1])
        apgr = evaluate_scores(outcomes, cumulative[:, width - 1] / width).apgr
        found[k] = -np.inf if apgr is None else apgr
    return found


def fit_knn(embedding: Matrix, small: Vector, large: Vector, ks: Sequence[int] = K_GRID) -> KnnRouter:
    """Keep the training prompts and pick k by leave-one-out APGR (see the module docstring).

    Args:
        embedding: one row per training prompt.
        small, large: each tier's quality per prompt, in [0, 1].

    Raises:
        ValueError: fewer than two rows, or no embedding columns.
    """
    if embedding.shape[0] < 2 or embedding.shape[1] == 0:
        raise ValueError(f"kNN needs two or more embedded rows, got {embedding.shape}")
    unit = _unit(embedding)
    small, large = np.asarray(small, dtype=np.float64), np.asarray(large, dtype=np.float64)
    usable = sorted({min(k, unit.shape[0] - 1) for k in ks})
    apgr = leave_one_out_apgr(unit, small, large, usable)
    best = max(usable, key=lambda k: (apgr[k], k))
    return KnnRouter(unit, large - small, best)
