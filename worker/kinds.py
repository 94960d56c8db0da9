"""The kinds in force for a process: the built-in kinds, Python plug-ins, then the kinds files.

Built once from the settings (`build_registry`) and handed to the runtime, the CLI
and the submit path. A bad kinds file or plug-in raises KindsRejected with every
problem (FILE:LINE: key: reason); nothing is half-loaded.

A plug-in is an entry point in the group `tierflow.kinds` whose object is a
KindPlugin, a KindSpec, or a callable returning either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from tierflow.routing.errors import InputError, KindsRejected
from tierflow.routing.kinds.checks import Check
from tierflow.routing.kinds.files import load_kind_texts
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry
from tierflow.routing.kinds.spec import KindSpec, Rule
from tierflow.worker.settings import Settings

ENTRY_POINT_GROUP = "tierflow.kinds"


@dataclass(frozen=True)
class KindPlugin:
    """What a Python package adds: kinds, and rule experts and checks under new names."""

    kinds: tuple[KindSpec, ...] = ()
    rules: dict[str, Rule] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)


def _plugin(point: EntryPoint) -> KindPlugin:
    loaded = point.load()
    if callable(loaded) and not isinstance(loaded, type | KindSpec):
        loaded = loaded()
    if isinstance(loaded, KindSpec):
        return KindPlugin(kinds=(loaded,))
    if isinstance(loaded, KindPlugin):
        return loaded
    raise TypeError(f"gives a {type(loaded).__name__}, not a KindPlugin or a KindSpec")


def load_plugins(points: Iterable[EntryPoint] | None = None) -> list[KindPlugin]:
    """The plug-ins installed under the entry point group; KindsRejected names any that fails."""
    plugins, problems = [], []
    for point in points if points is not None else entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugins.append(_plugin(point))
        except Exception as exc:  # an import error or a wrong object: the plug-in cannot load
            problems.append(InputError(f"entry point {point.name} ({point.value})", 0, "<plugin>", str(exc)))
    if problems:
        raise KindsRejected(tuple(problems))
    return plugins


def registry_from(paths: Sequence[Path], plugins: Sequence[KindPlugin] = ()) -> KindRegistry:
    """The built-ins, then the plug-ins' kinds, then the files' kinds, validated whole."""
    rules = {name: rule for plugin in plugins for name, rule in plugin.rules.items()}
    checks = {name: check for plugin in plugins for name, check in plugin.checks.items()}
    builtins = builtin_registry()
    extra = [kind for plugin in plugins for kind in plugin.kinds]
    try:
        base = KindRegistry([*builtins, *extra], rules, checks)
    except ValueError as exc:
        raise KindsRejected((InputError("plug-ins", 0, "<kind>", str(exc)),)) from None
    taken = {kind.name: "built-in" for kind in builtins} | {kind.name: "a plug-in" for kind in extra}
    texts = []
    for path in paths:
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise KindsRejected((InputError(str(path), 0, "<file>", f"cannot be read: {exc}"),)) from None
    known_rules = set(base.rule_names)
    declared = load_kind_texts(texts, taken, known_rules, base.check_names, lambda name: Path(name).is_file())
    return base.with_kinds(declared)


def build_registry(settings: Settings) -> KindRegistry:
    """The registry for these settings (the built-ins alone when nothing else is declared)."""
    plugins = load_plugins()
    if not settings.kinds and not plugins:
        return builtin_registry()
    return registry_from(list(settings.kinds), plugins)
