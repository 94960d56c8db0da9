"""Stage two of job analysis, fitted: a multinomial logistic regression over the embeddings.

Owns `LinearRoutes`, a softmax classifier fitted on the route examples' vectors
(standardised per dimension, L2-penalised, trained by mini-batch Adam with a
cosine step schedule, at least `min_steps` steps, and a fixed seed, so a fit is reproducible), whose score
for a route is its probability. The fitted weights are plain arrays
(`LinearRoutes.weights`), and `classify` answers with the same `SemanticMatch`
as `routing.semantic.SemanticRoutes`.

How thresholds are fitted: every training example is scored by a model fitted
on the other folds (`LinearConfig.folds`, stratified by route), which is what an
unseen query would see; out-of-scope examples are scored by the final model.
Those held-out probabilities go through the same per-route F-beta cut as the
nearest-example routes (`routing.semantic.fit_thresholds`).

Pure: numpy and pydantic only. Knows nothing of encoders, files or datasets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from tierflow.routing.semantic import Matrix, SemanticConfig, SemanticMatch, decide, fit_thresholds

Labels = npt.NDArray[np.intp]


class LinearConfig(BaseModel):
    """How the classifier is trained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    l2: float = Field(default=1e-3, ge=0.0, description="weight penalty per example")
    epochs: int = Field(default=30, ge=1)
    min_steps: int = Field(default=1200, ge=1, description="more epochs when the examples are few")
    batch_size: int = Field(default=256, ge=1)
    learning_rate: float = Field(default=0.01, gt=0.0)
    folds: int = Field(default=3, ge=2, description="folds for the held-out scores that fit thresholds")
    seed: int = 0


@dataclass(frozen=True)
class LinearWeights:
    """A fitted classifier as plain data: z = ((x - mean) / scale) @ weights + bias."""

    mean: Matrix
    scale: Matrix
    weights: Matrix
    bias: Matrix

    def probabilities(self, vectors: Matrix) -> Matrix:
        logits = ((vectors - self.mean) / self.scale) @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits.astype(np.float32, copy=False)


class LinearRoutes:
    """Routes as one fitted softmax classifier, with one fitted threshold per route.

    Build with `LinearRoutes.fit`; the constructor takes weights and thresholds as given.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        weights: LinearWeights,
        thresholds: Mapping[str, float],
        config: SemanticConfig,
        membership: Matrix | None = None,
    ) -> None:
        columns = weights.weights.shape[1] if membership is None else membership.shape[1]
        if not names or columns != len(names):
            raise ValueError("one weight column (or one group) per route is needed")
        self.names = names
        self.weights = weights
        self.membership = membership  # (classes, routes): which fitted class belongs to which route
        self.config = config
        self.thresholds = np.array([thresholds[name] for name in names], dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.weights.weights.shape[0])

    @classmethod
    def fit(
        cls,
        examples: Mapping[str, Matrix],
        config: SemanticConfig | None = None,
        negatives: Matrix | None = None,
        training: LinearConfig | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> LinearRoutes:
        """The classifier fitted on `examples`, thresholds fitted on held-out scores.

        Args:
            examples: class name -> unit-length example vectors.
            config: the thresholds' objective and margin (scoring is not used).
            negatives: out-of-scope vectors, which the thresholds are fitted to refuse.
            training: how the classifier is trained (default: `LinearConfig()`).
            groups: route -> the classes it is made of (default: each class is a route). A
                route's score is then the sum of its classes' probabilities: a domain is
                scored through its intents, since a union of intents is seldom linearly apart.
        """
        config = config or SemanticConfig()
        training = training or LinearConfig()
        classes = tuple(examples)
        if not classes:
            raise ValueError("routes need at least one route with examples")
        groups = groups or {name: (name,) for name in classes}
        names = tuple(groups)
        membership = np.zeros((len(classes), len(names)), dtype=np.float32)
        for route, members in enumerate(groups.values()):
            membership[[classes.index(member) for member in members], route] = 1.0
        vectors = np.ascontiguousarray(
            np.concatenate([np.asarray(examples[n], np.float32) for n in classes]), dtype=np.float32
        )
        labels = np.repeat(np.arange(len(classes)), [len(examples[n]) for n in classes]).astype(np.intp)
        final = train_softmax(vectors, labels, len(classes), training)
        scores = _held_out(vectors, labels, len(classes), training) @ membership
        truth = np.argmax(membership[labels], axis=1).astype(np.intp)
        if negatives is not None and len(negatives):
            scores = np.concatenate(
                [scores, final.probabilities(np.asarray(negatives, np.float32)) @ membership]
            )
            truth = np.concatenate([truth, np.full(len(negatives), -1, dtype=np.intp)])
        sizes = np.bincount(truth[truth >= 0], minlength=len(names))
        thresholds = fit_thresholds(scores, truth, sizes, config)
        return cls(names, final, dict(zip(names, thresholds.tolist(), strict=True)), config, membership)

    def scores(self, vectors: Matrix) -> Matrix:
        """(n queries, n routes) probabilities of unit-length query vectors, in `names` order."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected an (n, {self.dim}) matrix of query vectors, got {vectors.shape}")
        probabilities = self.weights.probabilities(vectors)
        return probabilities if self.membership is None else probabilities @ self.membership

    def classify(self, vectors: Matrix) -> list[SemanticMatch]:
        """The most probable route of each query vector, decided or unsure, in one batch."""
        rows = decide(self.scores(vectors), self.thresholds, self.config.margin)
        return [
            SemanticMatch(
                route=self.names[best],
                score=score,
                runner_up=self.names[second] if second >= 0 else None,
                runner_up_score=second_score if second >= 0 else None,
                threshold=float(self.thresholds[best]),
                outcome=outcome,
            )
            for best, score, second, second_score, outcome in rows
        ]


def _held_out(vectors: Matrix, labels: Labels, n_routes: int, training: LinearConfig) -> Matrix:
    """Each example's probabilities from a model fitted on the other folds (stratified by route)."""
    folds = _fold_of(labels, training.folds, training.seed)
    scores = np.zeros((len(vectors), n_routes), dtype=np.float32)
    for fold in range(training.folds):
        test = folds == fold
        if not test.any() or test.all():
            continue
        model = train_softmax(vectors[~test], labels[~test], n_routes, training)
        scores[test] = model.probabilities(vectors[test])
    return scores


def _fold_of(labels: Labels, folds: int, seed: int) -> Labels:
    """A fold per example, each route's examples dealt round the folds in a seeded order."""
    rng = np.random.default_rng(seed)
    assigned = np.zeros(len(labels), dtype=np.intp)
    for route in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == route))
        assigned[members] = np.arange(len(members)) % folds
    return assigned


def train_softmax(vectors: Matrix, labels: Labels, n_routes: int, training: LinearConfig) -> LinearWeights:
    """Multinomial logistic regression by mini-batch Adam on standardised vectors."""
    mean = vectors.mean(axis=0).astype(np.float32)
    scale = (vectors.std(axis=0) + 1e-3).astype(np.float32)
    inputs = ((vectors - mean) / scale).astype(np.float32)
    params = [np.zeros((vectors.shape[1], n_routes), np.float32), np.zeros(n_routes, np.float32)]
    moments = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    targets = np.eye(n_routes, dtype=np.float32)[labels]
    rng = np.random.default_rng(training.seed)
    step = 0
    batches = -(-len(inputs) // training.batch_size)
    epochs = max(training.epochs, -(-training.min_steps // batches))
    for epoch in range(epochs):
        rate = training.learning_rate * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
        order = rng.permutation(len(inputs))
        for start in range(0, len(order), training.batch_size):
            batch = order[start : start + training.batch_size]
            step += 1
            grads = _gradients(inputs[batch], targets[batch], params, training.l2)
            _adam(params, grads, moments, rate, step)
    return LinearWeights(mean=mean, scale=scale, weights=params[0], bias=params[1])


def _gradients(inputs: Matrix, targets: Matrix, params: list[Matrix], l2: float) -> list[Matrix]:
    logits = inputs @ params[0] + params[1]
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    error = (probabilities - targets) / len(inputs)
    return [inputs.T @ error + l2 * params[0], error.sum(axis=0)]


def _adam(
    params: list[Matrix],
    grads: list[Matrix],
    moments: tuple[list[Matrix], list[Matrix]],
    rate: float,
    step: int,
) -> None:
    beta1, beta2 = 0.9, 0.999
    for param, grad, first, second in zip(params, grads, *moments, strict=True):
        first *= beta1
        first += (1 - beta1) * grad
        second *= beta2
        second += (1 - beta2) * grad * grad
        corrected = first / (1 - beta1**step)
        param -= (rate * corrected / (np.sqrt(second / (1 - beta2**step)) + 1e-8)).astype(np.float32)
