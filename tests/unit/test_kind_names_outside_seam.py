"""Nothing outside the kind seam names a built-in kind, expert or specialist.

The seam is routing/kinds/ (the built-in kinds are declared in routing/kinds/builtin.py);
every other module of the packages reads kinds and experts through a KindSpec or the
registry. A name counts when a string literal (docstrings aside) is exactly a built-in
kind's or expert's name.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tierflow.routing.kinds.registry import builtin_registry

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("routing", "providers", "store", "tasks", "worker", "api")
SEAM = ("routing/kinds/",)
# Literals that are the same word with another meaning: the `prompt` field of the recorded
# outcome files (../shared/data/routellm), which the readers of those files parse.
OTHER_MEANING = {
    "providers/outcomes_data.py": {"prompt"},
    "providers/server/answers.py": {"prompt"},
}


def builtin_names() -> set[str]:
    kinds = list(builtin_registry())
    experts = {expert.name for kind in kinds for expert in kind.experts}
    specialists = {specialist.name for kind in kinds for specialist in kind.specialists}
    return {kind.name for kind in kinds} | experts | specialists


def _docstrings(tree: ast.AST) -> set[int]:
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, owners)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def named_in(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each string literal in `source` that is one of `names`."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in names
        and id(node) not in docs
    )


def modules_naming_builtins() -> dict[str, list[tuple[int, str]]]:
    names, found = builtin_names(), {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(SEAM):
                continue
            hits = [
                (line, name)
                for line, name in named_in(path.read_text(encoding="utf-8"), names)
                if name not in OTHER_MEANING.get(relative, set())
            ]
            if hits:
                found[relative] = hits
    return found


def test_the_names_scanned_are_the_built_in_kinds_and_experts() -> None:
    names = builtin_names()
    assert {"support", "document", "prompt"} <= names
    assert len(names) > 3  # the experts' names too
    assert "billing_refunds" in names  # and the specialists'


def test_the_scan_finds_a_built_in_name_in_code_and_not_in_a_docstring() -> None:
    source = '"""A module about the support kind."""\nif kind == "support":\n    expert = "verifier"\n'
    assert named_in(source, builtin_names()) == [(2, "support"), (3, "verifier")]


def test_no_module_outside_the_seam_names_a_built_in_kind_or_expert() -> None:
    found = modules_naming_builtins()
    where = [f"{path}:{line}: {name!r}" for path, hits in found.items() for line, name in hits]
    assert not found, "built-in kind or expert named outside routing/kinds/:\n" + "\n".join(where)
