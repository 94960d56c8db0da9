"""Reading a route tree file (`--hierarchy FILE`, `semantic_hierarchy`) and fitting it.

Owns turning a JSON file (`{"domain": ["intent", ...], ...}`, as CLINC150's
domains.json) into a validated `routing.semantic_tree.RouteTree`, checking it
against the train file's intents, and fitting `TreeRoutes` from labelled texts.
Errors are `InputError`s naming the file, the line and the key.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierflow.providers.encoders import Encoder
from tierflow.providers.labelled import OUT_OF_SCOPE, LabelledText
from tierflow.routing.errors import InputError
from tierflow.routing.semantic_tree import Fit, RouteTree, TreeRoutes, line_of, parse_tree


def read_tree(path: Path) -> tuple[RouteTree, str]:
    """The tree in `path`, and its text (for line numbers in later errors)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, 0, "file", f"cannot be read: {exc}") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_repeats(source, text))
    except json.JSONDecodeError as exc:
        raise InputError(source, exc.lineno, "<file>", f"not valid JSON ({exc.msg})") from None
    return parse_tree(value, source, text), text


def _no_repeats(source: str, text: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise InputError(source, line_of(text, key), key, "is declared twice")
            found[key] = value
        return found

    return build


def check_against(
    tree: RouteTree, text: str, tree_path: Path, train: list[LabelledText], train_path: Path
) -> None:
    """Every train intent is a leaf of the tree, and every leaf has train examples."""
    leaves = set(tree.leaves)
    inner = set(tree.children)
    for number, row in enumerate(train, start=1):
        if row.intent == OUT_OF_SCOPE or row.intent in leaves:
            continue
        why = (
            "is a domain, not an intent" if row.intent in inner else "is under no domain of " + str(tree_path)
        )
        raise InputError(str(train_path), number, "intent", f"{row.intent!r} {why}")
    seen = {row.intent for row in train}
    for leaf in tree.leaves:
        if leaf not in seen:
            why = f"has no examples in {train_path}: no query can reach it"
            raise InputError(str(tree_path), line_of(text, leaf), leaf, why)


def fit_tree(
    encoder: Encoder,
    tree: RouteTree,
    train: list[LabelledText],
    fit: Fit,
) -> TreeRoutes:
    """One classifier per level from the in-scope examples; the out-of-scope ones fit thresholds."""
    vectors = encoder.encode([row.text for row in train])
    by_intent: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(train):
        by_intent[row.intent].append(index)
    negatives = by_intent.pop(OUT_OF_SCOPE, [])
    examples = {intent: vectors[rows] for intent, rows in by_intent.items()}
    return TreeRoutes.fit(tree, examples, fit, vectors[negatives] if negatives else None)
