"""Hierarchical routes: a tree of routes (domain first, then intent within the domain), one
classifier per level, each with its own fitted thresholds.

Owns `RouteTree` (parent -> children, read from a JSON object such as CLINC150's
domains.json, `{"banking": ["transfer", "balance"], ...}`; a child that is itself a
key is an inner node, so trees may be deeper than two levels), its validation
(`parse_tree`: a cycle, a leaf no root reaches, a child under two parents, an empty
node -> `InputError` naming the file, line and key), and `TreeRoutes`, which fits one
classifier per inner node on the examples of the leaves below each child and walks a
query down the tree. A level that is unsure stops there: the query goes to that
node's general specialist (`TreeMatch.stopped_at`, the root meaning "no domain",
i.e. the next analysis stage) and is not decided.

Pure: numpy and pydantic only (through routing.semantic); the file is read by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tierflow.routing.errors import InputError
from tierflow.routing.semantic import Matrix, SemanticMatch

ROOT = "<root>"


class Classifier(Protocol):
    """What a level needs: route names and a batch classification (SemanticRoutes, LinearRoutes)."""

    names: tuple[str, ...]

    def classify(self, vectors: Matrix) -> list[SemanticMatch]: ...


# (class examples, route -> its classes, negatives) -> a classifier over the routes
Fit = Callable[[dict[str, Matrix], dict[str, tuple[str, ...]], Matrix | None], Classifier]


@dataclass(frozen=True)
class RouteTree:
    """Inner node -> its children, in file order; `ROOT` holds the top level."""

    children: Mapping[str, tuple[str, ...]]

    @property
    def leaves(self) -> tuple[str, ...]:
        inner = set(self.children)
        return tuple(c for kids in self.children.values() for c in kids if c not in inner)

    def leaves_under(self, node: str) -> tuple[str, ...]:
        if node not in self.children:
            return (node,)
        return tuple(leaf for child in self.children[node] for leaf in self.leaves_under(child))

    def parent_of(self) -> dict[str, str]:
        return {child: parent for parent, kids in self.children.items() for child in kids}


def line_of(text: str, name: str) -> int:
    """The 1-based line where `name` first appears as a JSON string in `text` (0: not found)."""
    match = re.search(r'"' + re.escape(name) + r'"', text)
    return text.count("\n", 0, match.start()) + 1 if match else 0


def parse_tree(value: object, source: str, text: str) -> RouteTree:
    """A validated tree from a parsed JSON object; `text` is the file's text, for line numbers."""
    if not isinstance(value, dict) or not value:
        raise InputError(source, 1 if text else 0, "<file>", "must be a JSON object: node -> [children]")
    parents: dict[str, str] = {}
    children: dict[str, tuple[str, ...]] = {}
    for node, kids in value.items():
        where = line_of(text, node)
        if not isinstance(kids, list) or not kids:
            raise InputError(source, where, node, "must list at least one child")
        for kid in kids:
            if not isinstance(kid, str) or not kid.strip():
                raise InputError(source, where, node, "children must be non-empty strings")
            if kid in parents:
                why = f"is listed under both {parents[kid]!r} and {node!r}: a route has one parent"
                raise InputError(source, line_of(text, kid), kid, why)
            if kid == node:
                raise InputError(source, where, node, "lists itself: a cycle")
            parents[kid] = node
        children[node] = tuple(kids)
    _check_reachable(children, parents, source, text)
    tops = tuple(node for node in children if node not in parents)
    return RouteTree({ROOT: tops, **children})


def _check_reachable(
    children: Mapping[str, tuple[str, ...]], parents: Mapping[str, str], source: str, text: str
) -> None:
    """Every node reachable from a top node; what is not lies on a cycle."""
    seen: set[str] = set()
    frontier = [node for node in children if node not in parents]
    while frontier:
        node = frontier.pop()
        seen.add(node)
        frontier.extend(kid for kid in children.get(node, ()) if kid not in seen)
    for node in children:
        if node not in seen:
            cycle = _cycle_from(node, parents)
            why = "lies on a cycle (" + " -> ".join(cycle) + "): no top-level node reaches it"
            raise InputError(source, line_of(text, node), node, why)


def _cycle_from(node: str, parents: Mapping[str, str]) -> list[str]:
    path = [node]
    while parents.get(path[-1]) not in (None, *path):
        path.append(parents[path[-1]])
    return [*reversed(path), node] if parents.get(path[-1]) == node else list(reversed(path))


@dataclass(frozen=True)
class TreeMatch:
    """A query's walk down the tree."""

    levels: tuple[SemanticMatch, ...]  # one per level visited, top first
    leaf: str  # the best child at every level: the leaf the query would reach
    stopped_at: str | None  # the node whose level was unsure (ROOT: the top level); None when decided

    @property
    def decided(self) -> bool:
        return self.stopped_at is None

    @property
    def handler(self) -> str:
        """Who takes the query: the leaf when decided, else the general specialist of the unsure node."""
        return self.leaf if self.stopped_at is None else self.stopped_at


class TreeRoutes:
    """One classifier per inner node of a tree with more than one child."""

    def __init__(self, tree: RouteTree, levels: Mapping[str, Classifier]) -> None:
        self.tree = tree
        self.levels = dict(levels)

    @classmethod
    def fit(
        cls, tree: RouteTree, examples: Mapping[str, Matrix], fit: Fit, negatives: Matrix | None = None
    ) -> TreeRoutes:
        """A classifier per inner node over its children, given the examples of the leaves below.

        Every leaf must have examples (callers check, to name the file). Negatives fit each
        level's thresholds to refuse them: out-of-scope queries can reach any level.
        """
        missing = [leaf for leaf in tree.leaves if leaf not in examples]
        if missing:
            raise ValueError(f"leaves without examples: {', '.join(missing)}")
        levels: dict[str, Classifier] = {}
        for node, kids in tree.children.items():
            if len(kids) < 2:
                continue  # one way down: nothing to decide
            groups = {kid: tree.leaves_under(kid) for kid in kids}
            below = {leaf: examples[leaf] for leaves in groups.values() for leaf in leaves}
            levels[node] = fit(below, groups, negatives)
        return cls(tree, levels)

    def classify(self, vectors: Matrix) -> list[TreeMatch]:
        """Each query walked from the top, a level at a time, in batches per node."""
        walks: list[list[SemanticMatch]] = [[] for _ in range(len(vectors))]
        at = [ROOT] * len(vectors)
        stopped: list[str | None] = [None] * len(vectors)
        pending = list(range(len(vectors)))
        while pending:
            by_node: dict[str, list[int]] = {}
            for index in pending:
                by_node.setdefault(at[index], []).append(index)
            pending = []
            for node, members in by_node.items():
                pending += self._step(node, members, vectors, walks, at, stopped)
        return [
            TreeMatch(levels=tuple(walk), leaf=leaf, stopped_at=stop)
            for walk, leaf, stop in zip(walks, at, stopped, strict=True)
        ]

    def _step(
        self,
        node: str,
        members: Sequence[int],
        vectors: Matrix,
        walks: list[list[SemanticMatch]],
        at: list[str],
        stopped: list[str | None],
    ) -> list[int]:
        """Move `members` from `node` one level down; the ones that still have a level to go."""
        kids = self.tree.children.get(node)
        if kids is None:
            return []  # a leaf
        matches: list[SemanticMatch | None] = [None] * len(members)
        if node in self.levels:
            matches = list(self.levels[node].classify(vectors[list(members)]))
        onward = []
        for index, match in zip(members, matches, strict=True):
            if match is not None:
                walks[index].append(match)
                if not match.decided and stopped[index] is None:
                    stopped[index] = node
            at[index] = match.route if match is not None else kids[0]
            onward.append(index)
        return onward
