"""The route tree: its validation at load, and a query's walk down its levels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tierflow.routing.errors import InputError
from tierflow.routing.semantic import SemanticRoutes
from tierflow.routing.semantic_linear import LinearRoutes
from tierflow.routing.semantic_tree import ROOT, RouteTree, TreeRoutes, parse_tree


def tree_of(value: object) -> RouteTree:
    text = json.dumps(value, indent=2)
    return parse_tree(json.loads(text), "tree.json", text)


def test_a_flat_domain_file_is_a_two_level_tree() -> None:
    tree = tree_of({"bank": ["balance", "transfer"], "travel": ["flight"]})
    assert tree.children[ROOT] == ("bank", "travel")
    assert tree.leaves == ("balance", "transfer", "flight")
    assert tree.leaves_under("bank") == ("balance", "transfer")


def test_an_inner_node_may_be_a_child_making_the_tree_deeper() -> None:
    tree = tree_of({"money": ["bank", "cards"], "bank": ["balance", "transfer"], "cards": ["lost_card"]})
    assert tree.children[ROOT] == ("money",)
    assert tree.leaves_under("money") == ("balance", "transfer", "lost_card")


def test_a_cycle_is_an_error_naming_the_line_and_the_key() -> None:
    value = {"root": ["a"], "a": ["x", "y"], "b": ["c"], "c": ["b", "z"]}
    with pytest.raises(InputError) as caught:
        tree_of(value)
    assert caught.value.source == "tree.json"
    assert caught.value.field in ("b", "c")
    assert "cycle" in caught.value.reason
    text = json.dumps(value, indent=2)
    assert text.splitlines()[caught.value.line - 1].strip().startswith(f'"{caught.value.field}"')


def test_a_node_listing_itself_is_a_cycle() -> None:
    with pytest.raises(InputError, match="cycle"):
        tree_of({"a": ["a", "b"]})


def test_a_child_under_two_parents_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        tree_of({"bank": ["balance"], "cards": ["balance", "lost"]})
    assert caught.value.field == "balance"
    assert "both" in caught.value.reason


@pytest.mark.parametrize("value", [[], {}, {"bank": []}, {"bank": "balance"}, {"bank": [""]}])
def test_a_malformed_tree_is_refused(value: object) -> None:
    with pytest.raises(InputError):
        tree_of(value)


def unit(points: np.ndarray) -> np.ndarray:
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def cluster(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float) -> np.ndarray:
    points = centre + spread * rng.standard_normal((n, len(centre)))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def separated() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two domains far apart, two intents in each close together: train and test vectors per intent."""
    rng = np.random.default_rng(3)
    dim = 16
    domains = {"bank": np.eye(dim)[0] * 3, "travel": np.eye(dim)[1] * 3}
    offsets = {"a": np.eye(dim)[2], "b": np.eye(dim)[3]}
    centres = {f"{d}_{i}": domains[d] + offsets[i] for d in domains for i in offsets}
    train = {name: cluster(rng, c, 40, 0.25) for name, c in centres.items()}
    test = {name: cluster(rng, c, 20, 0.25) for name, c in centres.items()}
    return train, test


def nearest(examples, groups, negatives):  # type: ignore[no-untyped-def]
    merged = {route: np.concatenate([examples[n] for n in names]) for route, names in groups.items()}
    return SemanticRoutes.fit(merged, negatives=negatives)


def linear(examples, groups, negatives):  # type: ignore[no-untyped-def]
    return LinearRoutes.fit(examples, negatives=negatives, groups=groups)


@pytest.mark.parametrize("fit", [nearest, linear])
def test_each_level_decides_its_own_children(separated, fit) -> None:  # type: ignore[no-untyped-def]
    train, test = separated
    tree = tree_of({"bank": ["bank_a", "bank_b"], "travel": ["travel_a", "travel_b"]})
    routes = TreeRoutes.fit(tree, train, fit)
    assert set(routes.levels) == {ROOT, "bank", "travel"}
    assert routes.levels[ROOT].names == ("bank", "travel")
    assert routes.levels["bank"].names == ("bank_a", "bank_b")
    names = list(test)
    matches = routes.classify(np.concatenate([test[n] for n in names]))
    truth = [n for n in names for _ in range(len(test[n]))]
    assert np.mean([m.leaf == t for m, t in zip(matches, truth, strict=True)]) >= 0.9
    assert all(len(m.levels) == 2 for m in matches)
    assert all(m.levels[0].route == m.leaf.split("_")[0] for m in matches)


def test_an_unsure_level_stops_there_and_hands_over_to_its_general_specialist(separated) -> None:  # type: ignore[no-untyped-def]
    train, _ = separated
    tree = tree_of({"bank": ["bank_a", "bank_b"], "travel": ["travel_a", "travel_b"]})
    routes = TreeRoutes.fit(tree, train, linear)
    means = {name: vectors.mean(axis=0) for name, vectors in train.items()}
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.standard_normal((5, len(means["bank_a"])))
    between_intents = unit(means["bank_a"] + means["bank_b"] + noise)  # clearly bank, neither intent
    between_domains = unit(means["bank_a"] + means["travel_a"] + noise)
    for match in routes.classify(between_intents):
        assert match.levels[0].decided and match.levels[0].route == "bank"
        assert match.stopped_at == "bank" and match.handler == "bank" and not match.decided
    stopped = [m.stopped_at for m in routes.classify(between_domains)]
    assert stopped.count(ROOT) >= 3  # the top level is unsure: no domain, the next stage takes it
    decided = routes.classify(train["travel_b"][:10])
    assert sum(m.decided and m.handler == "travel_b" for m in decided) >= 8


def test_a_single_child_needs_no_classifier(separated) -> None:  # type: ignore[no-untyped-def]
    train, test = separated
    tree = tree_of({"bank": ["bank_a", "bank_b"], "travel": ["travel_a"]})
    examples = {k: v for k, v in train.items() if k != "travel_b"}
    routes = TreeRoutes.fit(tree, examples, nearest)
    assert "travel" not in routes.levels
    matches = routes.classify(test["travel_a"])
    assert sum(m.leaf == "travel_a" for m in matches) >= 18


def test_a_leaf_without_examples_cannot_be_fitted(separated) -> None:  # type: ignore[no-untyped-def]
    train, _ = separated
    tree = tree_of({"bank": ["bank_a", "bank_b", "bank_c"]})
    with pytest.raises(ValueError, match="bank_c"):
        TreeRoutes.fit(tree, train, nearest)
