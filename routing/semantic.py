"""Stage two of job analysis: nearest routes by embedding similarity, with fitted thresholds.

Owns `SemanticRoutes` (route name -> unit-length example vectors), how a query's
score against a route is computed (`Scoring`), the per-route thresholds fitted
on the training examples themselves, and `SemanticMatch`, the outcome for one
query: the best route, its score, the runner-up, and whether the stage decided
or is unsure (score below the route's threshold, or the top two too close).

How thresholds are fitted (`SemanticRoutes.fit`): every training example is
scored leave-one-out against all the routes (its own vector removed from its
route), which is what an unseen query of that route would see; out-of-scope
examples, when given, are scored against the full routes. For each route, the
examples whose best route it is are ranked by score and the threshold is the
cut that maximises F-beta of "accept as this route" (recall counts every
example of the route), or the lowest cut that reaches `target_precision`. A
route seen by few examples is pulled toward the threshold fitted the same way
on all routes pooled (a weighted mean with `shrinkage` pseudo-examples). The
default beta is 0.5: a wrong decision here is silent, an unsure one goes on to
the LLM stage. The default scoring (`Scoring.AUTO`) is whichever of centroid,
nearest example and mean of the top k is most accurate leave-one-out.

Pure: numpy and pydantic only. Knows nothing of encoders, files or datasets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

Matrix = npt.NDArray[np.float32]
CHUNK = 1024  # queries per matrix product: bounds memory at CHUNK x examples floats


class Scoring(str, Enum):
    """How a query's similarities to one route's examples become the route's score."""

    MAX = "max"  # nearest example
    TOP_K_MEAN = "top_k_mean"  # mean of the k nearest examples
    CENTROID = "centroid"  # the normalised mean of the examples: one vector per route, fastest
    AUTO = "auto"  # whichever of the above is most accurate leave-one-out on the training examples


CANDIDATES = (Scoring.CENTROID, Scoring.MAX, Scoring.TOP_K_MEAN)


class Outcome(str, Enum):
    DECIDED = "decided"
    LOW_SCORE = "low_score"  # the best score is below the best route's threshold
    CLOSE_CALL = "close_call"  # the best and the runner-up are closer than the margin


class SemanticConfig(BaseModel):
    """How routes are scored and their thresholds fitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scoring: Scoring = Scoring.AUTO
    top_k: int = Field(default=3, ge=1)
    margin: float = Field(default=0.0, ge=0.0, description="unsure when best - runner-up is below this")
    # precision counts twice as much as recall: an unsure query goes on to the LLM stage, which
    # costs more but still decides; a wrong decision here is silent
    beta: float = Field(default=0.5, gt=0.0, description="F-beta for thresholds; below 1 favours precision")
    target_precision: float | None = Field(default=None, gt=0.0, le=1.0)
    shrinkage: float = Field(default=10.0, ge=0.0, description="pseudo-examples of the pooled threshold")


@dataclass(frozen=True)
class SemanticMatch:
    """The semantic stage's answer for one query."""

    route: str
    score: float
    runner_up: str | None
    runner_up_score: float | None
    threshold: float
    outcome: Outcome

    @property
    def decided(self) -> bool:
        return self.outcome is Outcome.DECIDED


class SemanticRoutes:
    """Routes as example vectors, with one fitted threshold per route.

    Build with `SemanticRoutes.fit`; the constructor takes thresholds as given.

    Args:
        examples: route name -> (n, dim) matrix of unit-length example vectors.
        thresholds: route name -> minimum score to decide that route.
        config: scoring and margin.
    """

    def __init__(
        self, examples: Mapping[str, Matrix], thresholds: Mapping[str, float], config: SemanticConfig
    ) -> None:
        if not examples:
            raise ValueError("routes need at least one route with examples")
        self.config = config
        self.names: tuple[str, ...] = tuple(examples)
        blocks = [np.asarray(examples[name], dtype=np.float32) for name in self.names]
        if any(block.ndim != 2 or len(block) == 0 for block in blocks):
            raise ValueError("every route needs a non-empty (n, dim) matrix of examples")
        self._vectors = np.ascontiguousarray(np.concatenate(blocks))
        sizes = np.array([len(block) for block in blocks])
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        self._sizes = sizes
        self._labels = np.repeat(np.arange(len(blocks)), sizes)
        self._sums = np.stack([block.sum(axis=0) for block in blocks]).astype(np.float32)
        self._centroids = _normalised(self._sums)
        self.thresholds = np.array([thresholds[name] for name in self.names], dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    @classmethod
    def fit(
        cls,
        examples: Mapping[str, Matrix],
        config: SemanticConfig | None = None,
        negatives: Matrix | None = None,
    ) -> SemanticRoutes:
        """Routes from labelled examples, thresholds fitted on them (see the module docstring).

        Args:
            examples: route name -> unit-length example vectors.
            config: scoring and fitting settings (default: `SemanticConfig()`).
            negatives: unit-length vectors of out-of-scope examples, which must come out unsure.
        """
        config = config or SemanticConfig()
        candidates = CANDIDATES if config.scoring is Scoring.AUTO else (config.scoring,)
        fitted = [
            cls._held_out(examples, config.model_copy(update={"scoring": s}), negatives) for s in candidates
        ]
        unfitted, scores, truth = max(fitted, key=lambda found: _accuracy(found[1], found[2]))
        thresholds = fit_thresholds(scores, truth, unfitted._sizes, config)
        return cls(examples, dict(zip(unfitted.names, thresholds.tolist(), strict=True)), unfitted.config)

    @classmethod
    def _held_out(
        cls, examples: Mapping[str, Matrix], config: SemanticConfig, negatives: Matrix | None
    ) -> tuple[SemanticRoutes, Matrix, npt.NDArray[np.intp]]:
        routes = cls(examples, dict.fromkeys(examples, 0.0), config)
        return (routes, *routes._held_out_scores(negatives))

    def scores(self, vectors: Matrix) -> Matrix:
        """(n queries, n routes) scores of unit-length query vectors, in `names` order."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected an (n, {self.dim}) matrix of query vectors, got {vectors.shape}")
        parts = [self._score_chunk(vectors[i : i + CHUNK]) for i in range(0, len(vectors), CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.names)), np.float32)

    def classify(self, vectors: Matrix) -> list[SemanticMatch]:
        """The best route of each query vector, decided or unsure, in one batch."""
        scores = self.scores(vectors)
        return [self._match(row) for row in decide(scores, self.thresholds, self.config.margin)]

    def _match(self, row: tuple[int, float, int, float, Outcome]) -> SemanticMatch:
        best, score, second, second_score, outcome = row
        has_second = second >= 0
        return SemanticMatch(
            route=self.names[best],
            score=score,
            runner_up=self.names[second] if has_second else None,
            runner_up_score=second_score if has_second else None,
            threshold=float(self.thresholds[best]),
            outcome=outcome,
        )

    def _score_chunk(self, queries: Matrix, own: npt.NDArray[np.intp] | None = None) -> Matrix:
        """Scores of a chunk of queries; `own` gives, per query, an example index to leave out."""
        if self.config.scoring is Scoring.CENTROID:
            scores = queries @ self._centroids.T
            if own is not None:
                scores[np.arange(len(queries)), self._labels[own]] = self._centroid_without(queries, own)
            return scores
        similarity = queries @ self._vectors.T
        if own is not None:
            similarity[np.arange(len(queries)), own] = -np.inf
        if self.config.scoring is Scoring.MAX:
            scores = np.maximum.reduceat(similarity, self._starts, axis=1)
        else:
            scores = _top_k_means(similarity, self._starts, self._sizes, self.config.top_k)
        return np.where(np.isfinite(scores), scores, -1.0).astype(np.float32)

    def _centroid_without(self, queries: Matrix, own: npt.NDArray[np.intp]) -> Matrix:
        rest = self._sums[self._labels[own]] - queries
        norms = np.linalg.norm(rest, axis=1)
        dots = np.einsum("ij,ij->i", queries, rest)
        return np.where(norms > 1e-6, dots / np.maximum(norms, 1e-6), -1.0).astype(np.float32)

    def _held_out_scores(self, negatives: Matrix | None) -> tuple[Matrix, npt.NDArray[np.intp]]:
        """Leave-one-out scores of every example, then negatives; truth is the route index or -1."""
        parts = []
        for start in range(0, len(self._vectors), CHUNK):
            own = np.arange(start, min(start + CHUNK, len(self._vectors)), dtype=np.intp)
            parts.append(self._score_chunk(self._vectors[own], own))
        truth = self._labels.astype(np.intp)
        if negatives is not None and len(negatives):
            parts.append(self.scores(negatives))
            truth = np.concatenate([truth, np.full(len(negatives), -1, dtype=np.intp)])
        return np.concatenate(parts), truth


def decide(scores: Matrix, thresholds: Matrix, margin: float) -> list[tuple[int, float, int, float, Outcome]]:
    """Per row of scores: best index and score, runner-up index (-1 if none) and score, outcome."""
    rows = np.arange(len(scores))
    best = np.argmax(scores, axis=1)
    best_score = scores[rows, best]
    if scores.shape[1] > 1:
        masked = scores.copy()
        masked[rows, best] = -np.inf
        second = np.argmax(masked, axis=1)
        second_score = masked[rows, second]
    else:
        second = np.full(len(scores), -1)
        second_score = np.full(len(scores), -np.inf, dtype=np.float32)
    low = best_score < thresholds[best]
    close = (best_score - second_score) < margin
    outcomes = [
        Outcome.LOW_SCORE if is_low else Outcome.CLOSE_CALL if is_close else Outcome.DECIDED
        for is_low, is_close in zip(low.tolist(), close.tolist(), strict=True)
    ]
    return list(
        zip(best.tolist(), best_score.tolist(), second.tolist(), second_score.tolist(), outcomes, strict=True)
    )


def fit_thresholds(
    scores: Matrix, truth: npt.NDArray[np.intp], sizes: npt.NDArray[np.int_], config: SemanticConfig
) -> Matrix:
    """One threshold per route from held-out scores (truth: route index, -1 for out of scope).

    Queries that the margin already leaves unsure are never accepted, so they do not
    count as accepted at any threshold; they still count in each route's recall.
    """
    ordered = np.sort(scores, axis=1)
    best = np.argmax(scores, axis=1)
    margin_ok = (ordered[:, -1] - (ordered[:, -2] if scores.shape[1] > 1 else -np.inf)) >= config.margin
    best_score, correct = ordered[:, -1][margin_ok], (best == truth)[margin_ok]
    predicted = best[margin_ok]
    pooled = _cut(best_score, correct, int((truth >= 0).sum()), config)
    thresholds = np.full(len(sizes), pooled, dtype=np.float32)
    for route in np.unique(predicted):
        mine = predicted == route
        own = _cut(best_score[mine], correct[mine], int(sizes[route]), config)
        weight = float(mine.sum())
        thresholds[route] = (weight * own + config.shrinkage * pooled) / (weight + config.shrinkage)
    return thresholds


def _cut(scores: Matrix, correct: npt.NDArray[np.bool_], positives: int, config: SemanticConfig) -> float:
    """The threshold that accepts the best-scoring share of `scores` by the config's objective."""
    if len(scores) == 0 or positives == 0:
        return 1.0
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    hits = np.cumsum(correct[order])
    accepted = np.arange(1, len(ranked) + 1)
    if config.target_precision is not None:
        reaching = np.flatnonzero(hits / accepted >= config.target_precision)
        if len(reaching) == 0:
            return float(ranked[0]) + 1e-6  # nothing reaches it: accept none
        k = int(reaching[-1])
    else:
        b2 = config.beta**2
        f_beta = (1 + b2) * hits / (accepted + b2 * positives)
        k = int(np.argmax(f_beta))
    if k + 1 < len(ranked):  # midway to the first score left out
        return float((ranked[k] + ranked[k + 1]) / 2)
    return float(ranked[k]) - 1e-6


def _accuracy(scores: Matrix, truth: npt.NDArray[np.intp]) -> float:
    in_scope = truth >= 0
    return float(np.mean(np.argmax(scores[in_scope], axis=1) == truth[in_scope])) if in_scope.any() else 0.0


def _top_k_means(
    similarity: Matrix, starts: npt.NDArray[np.intp], sizes: npt.NDArray[np.int_], k: int
) -> Matrix:
    """Mean of the k largest finite similarities in each route's block of columns."""
    scores = np.empty((len(similarity), len(starts)), dtype=np.float32)
    for route, (start, size) in enumerate(zip(starts.tolist(), sizes.tolist(), strict=True)):
        block = similarity[:, start : start + size]
        take = min(k, size)
        top = -np.partition(-block, take - 1, axis=1)[:, :take] if take < size else block
        finite = np.isfinite(top)
        counts = finite.sum(axis=1)
        sums = np.where(finite, top, 0.0).sum(axis=1)
        scores[:, route] = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    return scores


def _normalised(matrix: Matrix) -> Matrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    scaled: Matrix = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return scaled
