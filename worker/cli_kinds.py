"""`tierflow kinds check FILE...` and `tierflow kinds list`: the kinds files and the kinds in force."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tierflow.routing.errors import KindsRejected
from tierflow.routing.kinds.registry import KindRegistry
from tierflow.routing.kinds.spec import ExpertWhen, KindSpec
from tierflow.worker.kinds import build_registry, load_plugins, registry_from
from tierflow.worker.settings import load_settings

kinds_app = typer.Typer(add_completion=False, no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@kinds_app.command("check")
def check(files: Annotated[list[Path], typer.Argument(help="Kinds files (TOML)")]) -> None:
    """Validate kinds files; each problem as FILE:LINE: key: reason (exit 2 when any)."""
    try:
        registry = registry_from(files, load_plugins())
    except KindsRejected as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, highlight=False)
        err.print(f"{len(exc.problems)} problem(s): nothing loaded", markup=False, highlight=False)
        raise typer.Exit(2) from None
    declared = [kind.name for kind in registry if not kind.builtin]
    out.print(f"ok: {len(declared)} kind(s) declared: {', '.join(declared)}", markup=False, highlight=False)


def describe(registry: KindRegistry) -> list[str]:
    """One block per kind in force: its experts (type, tiers), its checks and review rules, and
    its specialists."""
    lines = []
    for kind in registry:
        origin = "built-in" if kind.builtin else "declared"
        lines.append(f"{kind.name} ({origin}): {kind.description}")
        for expert in kind.experts:
            tiers = ", ".join(t.value for t in expert.tiers) or "every tier"
            extra = f" rule {expert.rule}" if expert.rule else ""
            when = " (when verifying)" if expert.when is ExpertWhen.VERIFY else ""
            lines.append(f"  expert {expert.name}: {expert.type.value}{extra} on {tiers}{when}")
        for check in kind.checks:
            lines.append(f"  check {check.type} {', '.join(check.fields)} -> {check.on_fail.value}")
        for rule in kind.review:
            lines.append(f"  review {rule.type} {rule.field or ', '.join(rule.words)}")
        lines += [f"  specialist {line}" for line in specialist_lines(kind)]
    return lines


def specialist_lines(kind: KindSpec) -> list[str]:
    """One line per specialist of the kind: what selects it and what it changes."""
    lines = []
    for specialist in kind.specialists:
        parts = ["general" if specialist.general else ""]
        parts.append(f"intents {', '.join(specialist.intents)}" if specialist.intents else "")
        parts.append(f"experts {', '.join(specialist.experts)}" if specialist.experts else "")
        parts.append(f"sections {', '.join(specialist.sections)}" if specialist.sections else "")
        parts.append(f"+{len(specialist.checks)} check(s)" if specialist.checks else "")
        low, high = specialist.min_tier, specialist.max_tier
        if low or high:
            parts.append(f"tiers {low.value if low else '-'}..{high.value if high else '-'}")
        shown = "; ".join(part for part in parts if part)
        lines.append(f"{specialist.name}: {shown}")
    return lines


@kinds_app.command("list")
def list_kinds() -> None:
    """The kinds in force (built-ins, plug-ins, TIERFLOW_KINDS files) with experts and checks."""
    for line in describe(build_registry(load_settings())):
        out.print(line, markup=False, highlight=False)


def register(cli: typer.Typer) -> None:
    cli.add_typer(kinds_app, name="kinds", help="Check kinds files; list the kinds in force.")
