"""Kinds files: TOML that declares job kinds, validated whole before anything is loaded.

    [[kind]]                       name, description, text (a template over the payload)
    [kind.payload]                 the payload's JSON Schema
    [[kind.expert]]                name, type (model | retriever | rule), tiers, prompt,
    [kind.expert.answer]           instruction, rule, options; the answer's JSON Schema
    [[kind.check]]                 type (routing/kinds/checks.py) and its arguments
    [[kind.review]]                type (words | output_value | output_at_least | budget)
    [kind.routing]                 max_tier, min_tier, rules, budget_usd, deadline_s,
                                   capabilities, semantic_routes (a routes file, relative to
                                   the kinds file)
    [[kind.specialist]]            name, intents, general, experts, sections, min_tier, max_tier
    [kind.specialist.instructions] model expert name = the instruction added to its prompt
    [[kind.specialist.check]]      checks added to the kind's for the specialist's jobs
    [kind.decompose]               max_subtasks, depth, merge ("concatenate" or a model expert
                                   with when = "merge", whose prompt may read {parts}),
                                   min_words, llm (unsure | always | never)

A kind's `intents` (a list, beside its name) are the intents its analysis names; when given,
a specialist naming any other is refused.

Every problem is reported as (source, line, key, reason), the key a dotted path in
the file (`kind[2].expert[1].prompt`); one problem anywhere loads nothing.

Pure: the standard library, pydantic and jsonschema; reads only the text it is given.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import jsonschema
from pydantic import ValidationError

from tierflow.routing.errors import InputError, KindsRejected
from tierflow.routing.kinds.spec import MAX_TEMPLATE_BYTES, ExpertType, KindSpec
from tierflow.routing.kinds.template import template_fields, template_problem
from tierflow.routing.specialists import specialist_problems

Path = tuple[str | int, ...]
# TOML names -> KindSpec field names, and back for error paths.
KIND_KEYS = {
    "payload": "payload_schema",
    "expert": "experts",
    "check": "checks",
    "review": "review",
    "specialist": "specialists",
}
EXPERT_KEYS = {"answer": "answer_schema"}
SPECIALIST_KEYS = {"check": "checks"}
BACK = {v: k for k, v in KIND_KEYS.items()}
# the keys of an expert's or a specialist's table (the third part of a path: experts, 0, key)
BACK_WITHIN = {
    "experts": {v: k for k, v in EXPERT_KEYS.items()},
    "specialists": {v: k for k, v in SPECIALIST_KEYS.items()},
}
HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def _parts(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in dotted.split(".")]


@dataclass
class LineIndex:
    """Which line of a TOML text declares each table and key (tomllib keeps no positions)."""

    lines: dict[Path, int] = field(default_factory=dict)

    @classmethod
    def of(cls, text: str) -> LineIndex:
        index, counts = cls(), dict[Path, int]()
        table: Path = ()
        for number, line in enumerate(text.split("\n"), start=1):
            header = HEADER.match(line)
            if header and not line.lstrip().startswith("#"):
                table = cls._table(_parts(header.group(2)), header.group(1) == "[[", counts)
                index.lines.setdefault(table, number)
                continue
            assignment = ASSIGNMENT.match(line)
            if assignment and not line.lstrip().startswith("#"):
                index.lines.setdefault((*table, *_parts(assignment.group(1))), number)
        return index

    @staticmethod
    def _table(names: list[str], array: bool, counts: dict[Path, int]) -> Path:
        path: Path = ()
        for position, name in enumerate(names):
            path = (*path, name)
            if path in counts and (position < len(names) - 1 or not array):
                path = (*path, counts[path])  # a parent array table: its latest element
        if array:
            counts[path] = counts.get(path, -1) + 1
            for key in [k for k in counts if len(k) > len(path) and k[: len(path)] == path]:
                del counts[key]  # a new element starts its own sub-arrays
            path = (*path, counts[path])
        return path

    def line(self, path: Path) -> int:
        """The line of the longest prefix of `path` the text declares (0: none)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 0


def key_text(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<file>"


@dataclass
class Problems:
    source: str
    index: LineIndex
    rules: set[str]  # the rule experts and checks the registry offers
    checks: set[str]
    found: list[InputError] = field(default_factory=list)
    exists: Callable[[str], bool] | None = None  # whether a file named by a kind is there; None: unchecked

    def add(self, path: Path, reason: str) -> None:
        self.found.append(InputError(self.source, self.index.line(path), key_text(path), reason))


def _toml_path(loc: Sequence[str | int]) -> Path:
    """A pydantic error location in a KindSpec -> the path of the same key in the file."""
    path = list(loc)
    if path and isinstance(path[0], str):
        within = BACK_WITHIN.get(path[0], {})
        path[0] = BACK.get(path[0], path[0])
        if len(path) > 2 and isinstance(path[2], str):
            path[2] = within.get(path[2], path[2])
    return tuple(path)


def _spec_body(raw: Mapping[str, Any]) -> dict[str, Any]:
    body = {KIND_KEYS.get(key, key): value for key, value in raw.items()}
    body["experts"] = [
        {EXPERT_KEYS.get(k, k): v for k, v in expert.items()} if isinstance(expert, dict) else expert
        for expert in raw.get("expert", [])
    ]
    body["specialists"] = [
        {SPECIALIST_KEYS.get(k, k): v for k, v in specialist.items()}
        if isinstance(specialist, dict)
        else specialist
        for specialist in raw.get("specialist", [])
    ]
    return body


def _reason(error: Any) -> str:
    loc = error["loc"]
    if error["type"] == "enum" and loc and loc[-1] == "type":
        return f"unknown expert type {error['input']!r} (known: {', '.join(t.value for t in ExpertType)})"
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return str(error["msg"])


def _schema_problems(schema: object, path: Path, problems: Problems) -> bool:
    if not isinstance(schema, dict):
        problems.add(path, "must be a table (a JSON Schema)")
        return False
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = (*path, *(str(p) for p in error.path))
        problems.add(where, f"invalid JSON Schema: {error.message}")
        return False
    return True


def _template(template: str | None, fields: set[str] | None, path: Path, problems: Problems) -> None:
    """Size, braces, and (when the payload schema is valid: `fields` is not None) the fields named."""
    if template is None:
        return
    size = len(template.encode())
    if size > MAX_TEMPLATE_BYTES:
        problems.add(path, f"template of {size} bytes is over the limit of {MAX_TEMPLATE_BYTES}")
        return
    stray = template_problem(template)
    if stray:
        problems.add(path, stray)
    for name in template_fields(template):
        if fields is not None and name not in fields:
            problems.add(path, f"names {{{name}}}, a field the payload schema does not declare")


def _fields(schema: Mapping[str, Any]) -> set[str]:
    return set(schema.get("properties", {}))


def _raw_checks(raw: Mapping[str, Any], base: Path, problems: Problems) -> None:
    """What pydantic cannot see: schemas, templates, tiers, rules and checks the seam does not know."""
    payload = raw.get("payload", {"type": "object"})
    fields = _fields(payload) if _schema_problems(payload, (*base, "payload"), problems) else None
    _raw_names(raw, base, problems)
    if isinstance(raw.get("text"), str):
        _template(raw["text"], fields, (*base, "text"), problems)
    for j, expert in enumerate(raw.get("expert", [])):
        if not isinstance(expert, dict):
            continue
        where = (*base, "expert", j)
        if "tiers" in expert and expert["tiers"] == []:
            problems.add((*where, "tiers"), "an expert on no tier (leave tiers out for every tier)")
        if expert.get("type") == "model":
            if "answer" not in expert:
                problems.add(where, "a model expert needs an [answer] JSON Schema")
            else:
                _schema_problems(expert["answer"], (*where, "answer"), problems)
            if not isinstance(expert.get("prompt"), str):
                problems.add(where, "a model expert needs a prompt template")
            else:  # a merge expert's prompt also reads `parts`: the children's answers
                known = fields if fields is None or expert.get("when") != "merge" else fields | {"parts"}
                _template(expert["prompt"], known, (*where, "prompt"), problems)
            if isinstance(expert.get("instruction"), str):
                _template(expert["instruction"], None, (*where, "instruction"), problems)


def _raw_names(raw: Mapping[str, Any], base: Path, problems: Problems) -> None:
    """Unknown check types and rules, found on the raw tables so they are reported even when
    another part of the kind does not validate."""
    known_rules, known_checks = problems.rules, problems.checks
    for j, expert in enumerate(raw.get("expert", [])):
        rule = expert.get("rule") if isinstance(expert, dict) else None
        if isinstance(expert, dict) and expert.get("type") == "rule" and rule not in known_rules:
            known = ", ".join(sorted(known_rules))
            problems.add((*base, "expert", j, "rule"), f"unknown rule {rule!r} (known: {known})")
    for j, check in enumerate(raw.get("check", [])):
        kind = check.get("type") if isinstance(check, dict) else None
        if kind not in known_checks:
            known = ", ".join(sorted(known_checks))
            problems.add((*base, "check", j, "type"), f"unknown check {kind!r} (known: {known})")


def _known_parts(spec: KindSpec, base: Path, problems: Problems) -> None:
    """The experts that checks, review rules and routing name exist in the kind."""
    names = {expert.name for expert in spec.experts}
    for j, check in enumerate(spec.checks):
        for name in check.experts:
            if name not in names:
                problems.add((*base, "check", j, "experts"), f"names {name!r}, not an expert of this kind")
    for j, rule in enumerate(spec.review):
        if rule.expert is not None and rule.expert not in names:
            problems.add((*base, "review", j, "expert"), f"names {rule.expert!r}, not an expert of this kind")
    answered = spec.routing.answered_by
    if answered is not None and answered not in names:
        problems.add((*base, "routing", "answered_by"), f"names {answered!r}, not an expert of this kind")
    fields = _fields(spec.payload_schema)
    if spec.chat_field is not None and spec.chat_field not in fields:
        why = f"names {spec.chat_field!r}, a field the payload does not declare"
        problems.add((*base, "chat_field"), why)
    routes = spec.routing.semantic_routes
    if routes is not None and problems.exists is not None and not problems.exists(routes):
        problems.add((*base, "routing", "semantic_routes"), f"no such routes file: {routes}")
    for key, why in specialist_problems(spec, problems.checks):
        problems.add((*base, *_toml_path(key)), why)


def _routes_beside(spec: KindSpec, source: str) -> KindSpec:
    """The kind with its semantic routes file named from the kinds file's folder when relative."""
    routes = spec.routing.semantic_routes
    if routes is None or PurePath(routes).is_absolute():
        return spec
    beside = str(PurePath(source).parent / routes)
    return spec.model_copy(update={"routing": spec.routing.model_copy(update={"semantic_routes": beside})})


def parse_kinds(
    text: str,
    source: str,
    taken: Mapping[str, str],
    rules: Iterable[str],
    checks: Iterable[str],
    exists: Callable[[str], bool] | None = None,
) -> tuple[list[KindSpec], list[InputError]]:
    """The kinds a file declares and every problem found in it.

    Args:
        taken: kind names already declared, and where (built-ins and earlier files).
        rules, checks: the names of the rule experts and checks the registry offers.
        exists: whether a file a kind names (its semantic routes) is there; None checks nothing.
    """
    index = LineIndex.of(text)
    problems = Problems(source, index, set(rules), set(checks), exists=exists)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        problems.found.append(
            InputError(source, int(line.group(1)) if line else 0, "<file>", f"not TOML: {exc}")
        )
        return [], problems.found
    for key in document:
        if key != "kind":
            problems.add((key,), "unknown key (a kinds file declares [[kind]] tables)")
    raw_kinds = document.get("kind", [])
    if not isinstance(raw_kinds, list) or not raw_kinds:
        problems.add(("kind",), "no [[kind]] declared")
        return [], problems.found
    kinds: list[KindSpec] = []
    seen = dict(taken)
    for i, raw in enumerate(raw_kinds):
        spec = _one_kind(raw, ("kind", i), seen, problems)
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name not in seen:  # a later kind of its name is a duplicate too
            seen[name] = f"{source}:{index.line(('kind', i))}"
        if spec is not None:
            kinds.append(spec)
    return kinds, sorted(problems.found, key=lambda problem: problem.line)


def _one_kind(
    raw: Mapping[str, Any],
    base: Path,
    seen: Mapping[str, str],
    problems: Problems,
) -> KindSpec | None:
    before = len(problems.found)
    name = raw.get("name")
    if isinstance(name, str) and name in seen:
        where = seen[name]
        why = "a built-in kind" if where == "built-in" else f"already declared at {where}"
        problems.add((*base, "name"), f"kind {name!r} is {why}")
    _raw_checks(raw, base, problems)
    try:
        spec = KindSpec.model_validate(_spec_body(raw))
    except ValidationError as exc:
        for error in exc.errors():
            problems.add((*base, *_toml_path(error["loc"])), _reason(error))
        return None
    spec = _routes_beside(spec, problems.source)
    _known_parts(spec, base, problems)
    return spec if len(problems.found) == before else None


def load_kind_texts(
    texts: Sequence[tuple[str, str]],
    taken: Mapping[str, str],
    rules: Iterable[str],
    checks: Iterable[str],
    exists: Callable[[str], bool] | None = None,
) -> list[KindSpec]:
    """The kinds of several files ((source, text) pairs, in order); KindsRejected with every
    problem of every file when any has one."""
    kinds: list[KindSpec] = []
    found: list[InputError] = []
    names = dict(taken)
    for source, text in texts:
        parsed, problems = parse_kinds(text, source, names, rules, checks, exists)
        found += problems
        for kind in parsed:
            names[kind.name] = source
        kinds += parsed
    if found:
        raise KindsRejected(tuple(found))
    return kinds
