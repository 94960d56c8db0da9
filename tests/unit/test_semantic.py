"""The semantic stage on small synthetic vectors: scoring, fitted thresholds, unsure outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.semantic import (
    Outcome,
    Scoring,
    SemanticConfig,
    SemanticRoutes,
    fit_thresholds,
)

DIM = 16


def unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float32))
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def axis(index: int) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[index] = 1.0
    return vector


def cluster(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float) -> np.ndarray:
    return unit(centre + spread * rng.standard_normal((n, DIM)))


@pytest.fixture
def examples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "refund": cluster(rng, axis(0), 40, 0.15),
        "login": cluster(rng, axis(1), 40, 0.15),
        "shipping": cluster(rng, axis(2), 40, 0.35),  # a looser route
    }


@pytest.mark.parametrize("scoring", [Scoring.MAX, Scoring.TOP_K_MEAN, Scoring.CENTROID, Scoring.AUTO])
def test_queries_near_a_route_go_to_that_route_and_are_decided(
    examples: dict[str, np.ndarray], scoring: Scoring
) -> None:
    routes = SemanticRoutes.fit(examples, SemanticConfig(scoring=scoring))
    rng = np.random.default_rng(1)
    queries = np.concatenate([cluster(rng, axis(i), 10, 0.1) for i in range(3)])
    matches = routes.classify(queries)
    assert [m.route for m in matches] == ["refund"] * 10 + ["login"] * 10 + ["shipping"] * 10
    assert all(m.decided and m.outcome is Outcome.DECIDED for m in matches)
    assert all(m.runner_up is not None and m.runner_up != m.route for m in matches)
    assert all(m.runner_up_score is not None and m.runner_up_score <= m.score for m in matches)


def test_auto_scoring_settles_on_one_concrete_scoring(examples: dict[str, np.ndarray]) -> None:
    routes = SemanticRoutes.fit(examples)
    assert routes.config.scoring in (Scoring.MAX, Scoring.TOP_K_MEAN, Scoring.CENTROID)


def test_thresholds_are_fitted_per_route_from_the_examples(examples: dict[str, np.ndarray]) -> None:
    routes = SemanticRoutes.fit(examples, SemanticConfig(scoring=Scoring.MAX, shrinkage=0.0))
    thresholds = dict(zip(routes.names, routes.thresholds.tolist(), strict=True))
    assert len(set(thresholds.values())) == 3
    assert all(0.0 < value < 1.0 for value in thresholds.values())
    assert thresholds["shipping"] < min(thresholds["refund"], thresholds["login"])  # looser route


def test_out_of_scope_examples_raise_the_threshold_of_the_route_they_resemble(
    examples: dict[str, np.ndarray],
) -> None:
    config = SemanticConfig(scoring=Scoring.MAX, shrinkage=0.0)
    rng = np.random.default_rng(3)
    near_refund = cluster(rng, axis(0) + 0.9 * axis(5), 30, 0.1)
    plain = SemanticRoutes.fit(examples, config)
    with_negatives = SemanticRoutes.fit(examples, config, negatives=near_refund)
    refund = plain.names.index("refund")
    assert with_negatives.thresholds[refund] > plain.thresholds[refund]
    assert not any(m.decided for m in with_negatives.classify(cluster(rng, axis(0) + 0.9 * axis(5), 10, 0.1)))


def test_a_query_far_from_every_route_is_unsure_with_a_low_score(examples: dict[str, np.ndarray]) -> None:
    routes = SemanticRoutes.fit(examples)
    (match,) = routes.classify(unit(axis(9)))
    assert not match.decided
    assert match.outcome is Outcome.LOW_SCORE
    assert match.score < match.threshold


def test_a_query_between_two_routes_is_a_close_call_under_a_margin(examples: dict[str, np.ndarray]) -> None:
    between = unit(axis(0) + axis(1) + 0.05 * axis(2))
    loose = SemanticRoutes(examples, dict.fromkeys(examples, 0.0), SemanticConfig(scoring=Scoring.CENTROID))
    strict = SemanticRoutes(
        examples, dict.fromkeys(examples, 0.0), SemanticConfig(scoring=Scoring.CENTROID, margin=0.1)
    )
    (decided,) = loose.classify(between)
    (unsure,) = strict.classify(between)
    assert decided.decided and {decided.route, decided.runner_up} == {"refund", "login"}
    assert unsure.outcome is Outcome.CLOSE_CALL and not unsure.decided
    assert unsure.runner_up_score is not None and unsure.score - unsure.runner_up_score < 0.1


def test_a_batch_gives_the_same_matches_as_one_query_at_a_time(examples: dict[str, np.ndarray]) -> None:
    routes = SemanticRoutes.fit(examples, SemanticConfig(scoring=Scoring.TOP_K_MEAN, margin=0.02))
    rng = np.random.default_rng(11)
    queries = unit(rng.standard_normal((2100, DIM)))  # more than one internal chunk
    batched = routes.classify(queries)
    assert len(batched) == len(queries)
    for index in range(0, len(queries), 97):
        (alone,) = routes.classify(queries[index : index + 1])
        together = batched[index]
        assert (alone.route, alone.runner_up, alone.outcome) == (
            together.route,
            together.runner_up,
            together.outcome,
        )
        assert alone.score == pytest.approx(together.score, abs=1e-5)


def test_route_names_do_not_change_the_decisions(examples: dict[str, np.ndarray]) -> None:
    renamed = {f"r{index}": vectors for index, vectors in enumerate(examples.values())}
    rng = np.random.default_rng(5)
    queries = unit(rng.standard_normal((50, DIM)))
    first = SemanticRoutes.fit(examples).classify(queries)
    second = SemanticRoutes.fit(renamed).classify(queries)
    assert [m.outcome for m in first] == [m.outcome for m in second]
    assert [list(examples).index(m.route) for m in first] == [int(m.route[1:]) for m in second]


def test_target_precision_picks_the_lowest_cut_that_reaches_it() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.1], [0.7, 0.1], [0.6, 0.1], [0.5, 0.1]], dtype=np.float32)
    truth = np.array([0, 0, 1, 0, 1])  # rows 2 and 4 are wrong: their best route is 0, truth 1
    sizes = np.array([3, 2])
    config = SemanticConfig(target_precision=0.75, shrinkage=0.0)
    thresholds = fit_thresholds(scores, truth, sizes, config)
    # accepting the top 4 gives 3/4 correct; the top 5 gives 3/5
    assert 0.5 < thresholds[0] < 0.6


def test_f1_cut_accepts_while_it_gains_more_than_it_loses() -> None:
    scores = np.array([[0.9, 0.0], [0.85, 0.0], [0.8, 0.0], [0.4, 0.0], [0.3, 0.0]], dtype=np.float32)
    truth = np.array([0, 0, 0, -1, -1])  # two out-of-scope rows score low
    thresholds = fit_thresholds(scores, truth, np.array([3, 1]), SemanticConfig(beta=1.0, shrinkage=0.0))
    assert 0.4 < thresholds[0] < 0.8


def test_query_vectors_of_the_wrong_width_are_refused(examples: dict[str, np.ndarray]) -> None:
    routes = SemanticRoutes.fit(examples)
    with pytest.raises(ValueError, match="query vectors"):
        routes.classify(np.ones((2, DIM + 1), dtype=np.float32))


def test_a_route_with_a_single_example_still_fits() -> None:
    examples = {"one": unit(axis(0)), "many": cluster(np.random.default_rng(2), axis(1), 10, 0.1)}
    routes = SemanticRoutes.fit(examples)
    assert np.isfinite(routes.thresholds).all()
    assert routes.classify(unit(axis(0)))[0].route == "one"
