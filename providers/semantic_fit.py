"""Fitting the semantic stage from labelled texts: which classifier, flat or as a tree.

Shared by `tierflow eval semantic` and the workers' semantic stage
(`tasks.runtime.build_semantic_stage`), so that what is measured is what runs.
Owns `ClassifierKind` (nearest examples or centroids, `routing.semantic`; a softmax
regression, `routing.semantic_linear`), fitting either flat or one per level of a
route tree (`providers.route_tree`), and `Predicted`, one query's outcome in the
same shape whichever was fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from tierflow.providers.encoders import Encoder
from tierflow.providers.labelled import OUT_OF_SCOPE, LabelledText, fit_routes
from tierflow.providers.route_tree import check_against, fit_tree, read_tree
from tierflow.routing.errors import InputError
from tierflow.routing.semantic import Matrix, Outcome, SemanticRoutes
from tierflow.routing.semantic_linear import LinearRoutes
from tierflow.routing.semantic_tree import Classifier, Fit, TreeRoutes


class ClassifierKind(str, Enum):
    NEAREST = "nearest"  # routing.semantic: nearest examples or centroids (the default)
    LINEAR = "linear"  # routing.semantic_linear: a softmax regression fitted on the embeddings


Routes = Classifier | TreeRoutes


@dataclass(frozen=True)
class Predicted:
    """One query's outcome: the route reached (a tree's leaf), whether it was decided, the score
    and runner-up of the last level asked, the node whose level was unsure (None: decided), and
    whether the best score fell below the fitted threshold (the semantic stage's out of scope)."""

    route: str
    decided: bool
    score: float = 0.0
    runner_up: str | None = None
    stopped_at: str | None = None
    low_score: bool = False


def predict(routes: Routes, vectors: Matrix) -> list[Predicted]:
    """Flat routes decide a route; a tree reaches a leaf, decided only when no level was unsure."""
    if isinstance(routes, TreeRoutes):
        found = []
        for walk in routes.classify(vectors):
            last = walk.levels[-1] if walk.levels else None
            score, runner_up = (last.score, last.runner_up) if last else (1.0, None)
            found.append(Predicted(walk.leaf, walk.decided, score, runner_up, walk.stopped_at))
        return found
    return [
        Predicted(m.route, m.decided, m.score, m.runner_up, low_score=m.outcome is Outcome.LOW_SCORE)
        for m in routes.classify(vectors)
    ]


def fit_level(kind: ClassifierKind) -> Fit:
    """How one level (or the flat routes) is fitted from route examples and negatives."""
    if kind is ClassifierKind.LINEAR:
        return lambda examples, groups, negatives: LinearRoutes.fit(
            examples, negatives=negatives, groups=groups
        )
    return lambda examples, groups, negatives: SemanticRoutes.fit(
        {route: np.concatenate([examples[name] for name in names]) for route, names in groups.items()},
        negatives=negatives,
    )


def fit_classifier(
    encoder: Encoder,
    rows: list[LabelledText],
    path: Path,
    kind: ClassifierKind = ClassifierKind.NEAREST,
    hierarchy: Path | None = None,
) -> Routes:
    """Flat routes of `kind` from the rows of `path`, or a tree of them when a hierarchy file is given."""
    if hierarchy is not None:
        tree, text = read_tree(hierarchy)
        check_against(tree, text, hierarchy, rows, path)
        return fit_tree(encoder, tree, rows, fit_level(kind))
    if kind is ClassifierKind.NEAREST:
        return fit_routes(encoder, rows)
    return fit_flat(encoder, rows, path, fit_level(kind))


def fit_flat(encoder: Encoder, rows: list[LabelledText], path: Path, fit: Fit) -> Classifier:
    """Flat routes fitted by `fit` from the in-scope rows; the out-of-scope ones are negatives."""
    vectors = encoder.encode([row.text for row in rows])
    by_intent: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_intent.setdefault(row.intent, []).append(index)
    negatives = by_intent.pop(OUT_OF_SCOPE, [])
    if not by_intent:
        raise InputError(str(path), 0, "intent", "no in-scope examples: every intent is oos")
    examples = {intent: vectors[found] for intent, found in sorted(by_intent.items())}
    return fit(examples, {name: (name,) for name in examples}, vectors[negatives] if negatives else None)
