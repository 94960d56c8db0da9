"""The figures of `tierflow eval semantic`: overall, per intent, and flat against hierarchical.

Owns `SemanticReport` (the `--json` contract), `report` (the metrics of the
predicted outcomes against the test file's intents), `per_intent` (n, accuracy,
decided share and decided accuracy per intent of the test file) and the printing
of one report or of several side by side. Imports no store, tasks or Celery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from tierflow.providers.labelled import OUT_OF_SCOPE, LabelledText
from tierflow.providers.semantic_fit import Predicted

out = Console(soft_wrap=True)


@dataclass(frozen=True)
class SemanticReport:
    """What `tierflow eval semantic --json` prints."""

    n: int
    accuracy: float | None
    decided_share: float | None
    decided_accuracy: float | None
    oos_recall: float | None
    queries_per_s: float
    decisions_per_s: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "decided_share": self.decided_share,
            "decided_accuracy": self.decided_accuracy,
            "oos_recall": self.oos_recall,
            "queries_per_s": self.queries_per_s,
            "decisions_per_s": self.decisions_per_s,
        }


def report(
    matches: Sequence[Predicted], test: Sequence[LabelledText], seconds: float, classify_s: float = 0.0
) -> SemanticReport:
    """The metrics of `matches` against the test file's intents."""
    in_scope = [(m, row.intent) for m, row in zip(matches, test, strict=True) if row.intent != OUT_OF_SCOPE]
    decided = [(m, intent) for m, intent in in_scope if m.decided]
    oos = [m for m, row in zip(matches, test, strict=True) if row.intent == OUT_OF_SCOPE]
    return SemanticReport(
        n=len(test),
        accuracy=share(m.route == intent for m, intent in in_scope),
        decided_share=share(m.decided for m, _ in in_scope),
        decided_accuracy=share(m.route == intent for m, intent in decided),
        oos_recall=share(not m.decided for m in oos),
        queries_per_s=rate(len(test), seconds),
        decisions_per_s=rate(len(test), classify_s),
    )


def per_intent(matches: Sequence[Predicted], test: Sequence[LabelledText]) -> dict[str, dict[str, Any]]:
    """Per in-scope intent of the test file, in name order: n, accuracy (routed to it), decided
    share, and accuracy among the decided (None when none was decided)."""
    by_intent: dict[str, list[Predicted]] = {}
    for match, row in zip(matches, test, strict=True):
        if row.intent != OUT_OF_SCOPE:
            by_intent.setdefault(row.intent, []).append(match)
    return {
        intent: {
            "n": len(found),
            "accuracy": share(m.route == intent for m in found),
            "decided_share": share(m.decided for m in found),
            "decided_accuracy": share(m.route == intent for m in found if m.decided),
        }
        for intent, found in sorted(by_intent.items())
    }


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def share(flags: Iterable[bool]) -> float | None:
    values = list(flags)
    return round(float(np.mean(values)), 4) if values else None


def print_reports(reports: Mapping[str, Mapping[str, Any]]) -> None:
    """One column per report (flat, hierarchical, ...), one row per metric; then per intent."""
    table = Table(box=None)
    table.add_column("metric")
    for name in reports:
        table.add_column(name, justify="right")
    metrics = [key for key in next(iter(reports.values())) if key != "per_intent"]
    for metric in metrics:
        table.add_row(metric, *(_cell(found[metric]) for found in reports.values()))
    out.print(table)
    for name, found in reports.items():
        if "per_intent" in found:
            title = "per intent" if len(reports) == 1 else f"per intent ({name})"
            out.print(_intent_table(found["per_intent"], title))


def _intent_table(rows: Mapping[str, Mapping[str, Any]], title: str) -> Table:
    table = Table(title=title, box=None)
    for head in ("intent", "n", "accuracy", "decided_share", "decided_accuracy"):
        table.add_column(head, justify="left" if head == "intent" else "right")
    for intent, row in sorted(rows.items(), key=lambda item: (item[1]["accuracy"] or 0.0, item[0])):
        table.add_row(
            intent, *(_cell(row[key]) for key in ("n", "accuracy", "decided_share", "decided_accuracy"))
        )
    return table


def _cell(value: object) -> str:
    return "-" if value is None else str(value)
