"""The fitted softmax routes: accuracy on separable routes, thresholds that refuse out of scope."""

from __future__ import annotations

import numpy as np

from tierflow.routing.semantic_linear import LinearConfig, LinearRoutes, train_softmax


def unit(points: np.ndarray) -> np.ndarray:
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def routes_and_queries(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = {name: np.eye(12)[i] * 2 for i, name in enumerate(("alarm", "weather", "balance"))}
    train = {n: unit(c + 0.5 * rng.standard_normal((60, 12))) for n, c in centres.items()}
    test = {n: unit(c + 0.5 * rng.standard_normal((30, 12))) for n, c in centres.items()}
    return train, test


def test_the_fitted_routes_classify_unseen_queries() -> None:
    train, test = routes_and_queries()
    routes = LinearRoutes.fit(train)
    assert routes.names == ("alarm", "weather", "balance")
    for name, queries in test.items():
        matches = routes.classify(queries)
        assert np.mean([m.route == name for m in matches]) >= 0.9
        scores = routes.scores(queries)
        assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)  # probabilities


def test_out_of_scope_negatives_raise_the_thresholds() -> None:
    train, _ = routes_and_queries()
    rng = np.random.default_rng(5)
    outside = unit(np.eye(12)[3:9].sum(axis=0) + 0.3 * rng.standard_normal((80, 12)))
    without = LinearRoutes.fit(train)
    with_negatives = LinearRoutes.fit(train, negatives=outside[:40])
    refused_without = np.mean([not m.decided for m in without.classify(outside[40:])])
    refused_with = np.mean([not m.decided for m in with_negatives.classify(outside[40:])])
    assert refused_with >= refused_without
    assert refused_with >= 0.5


def test_a_fit_is_reproducible() -> None:
    train, _ = routes_and_queries()
    vectors = np.concatenate(list(train.values()))
    labels = np.repeat(np.arange(3), 60).astype(np.intp)
    first = train_softmax(vectors, labels, 3, LinearConfig(epochs=5))
    second = train_softmax(vectors, labels, 3, LinearConfig(epochs=5))
    assert np.array_equal(first.weights, second.weights)


def test_grouped_classes_score_a_route_by_the_sum_of_its_classes() -> None:
    train, test = routes_and_queries()
    routes = LinearRoutes.fit(train, groups={"home": ("alarm", "weather"), "money": ("balance",)})
    assert routes.names == ("home", "money")
    scores = routes.scores(test["weather"])
    assert scores.shape == (30, 2) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert np.mean([m.route == "home" for m in routes.classify(test["alarm"])]) >= 0.9
    assert np.mean([m.route == "money" for m in routes.classify(test["balance"])]) >= 0.9
