"""`tierflow eval documents`: the rule extractor and its validators measured on labelled receipts.

Owns reading files shaped like ../shared/data/sroie (`{"text", "fields": {"company",
"date", "total", ...}}`), scoring the accept-without-a-model decision against the
labels, and printing the figures. Decisions come from routing/documents.py; this
module must not import the store, the tasks or the providers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tierflow.routing.documents import decide_document, extract_fields
from tierflow.routing.errors import InputError
from tierflow.routing.jsonl import JsonValueError, loads, strict_records

SCORED_FIELDS = ("company", "date", "total")


@dataclass(frozen=True)
class LabelledDocument:
    text: str
    truth: dict[str, str]


@dataclass
class DocumentScores:
    """Counts over a file: receipts, those accepted by the rules, and exact fields among those."""

    n: int = 0
    accepted: int = 0
    exact: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCORED_FIELDS, 0))

    def add(self, document: LabelledDocument) -> None:
        extracted = extract_fields(document.text)
        self.n += 1
        if not decide_document(extracted).accept:
            return
        self.accepted += 1
        found = extracted.fields()
        for name in SCORED_FIELDS:
            self.exact[name] += same_value(found.get(name), document.truth.get(name))

    def report(self) -> dict[str, Any]:
        """The contract of `--json`: n, accepted_share, accepted_accuracy per field, escalated_share."""
        accuracy = {
            name: (round(self.exact[name] / self.accepted, 4) if self.accepted else None)
            for name in SCORED_FIELDS
        }
        return {
            "n": self.n,
            "accepted_share": round(self.accepted / self.n, 4) if self.n else 0.0,
            "accepted_accuracy": accuracy,
            "escalated_share": round((self.n - self.accepted) / self.n, 4) if self.n else 0.0,
        }


def same_value(found: str | None, truth: str | None) -> bool:
    """Exact after trimming whitespace and case, as the evaluation contract says."""
    return (found or "").strip().casefold() == (truth or "").strip().casefold()


def _field(record: dict[str, Any], source: str, number: int) -> dict[str, str]:
    fields = record.get("fields")
    if not isinstance(fields, dict):
        raise InputError(source, number, "fields", "must be an object with company, date and total")
    truth = {}
    for name in SCORED_FIELDS:
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise InputError(source, number, f"fields.{name}", "must be a string")
        truth[name] = value or ""
    return truth


def parse_line(line: str, source: str, number: int) -> LabelledDocument:
    try:
        record = loads(line)
    except JsonValueError as exc:
        raise InputError(source, number, exc.field, exc.reason) from None
    return parse_record(record, source, number)


def parse_record(record: Any, source: str, number: int) -> LabelledDocument:
    if not isinstance(record, dict):
        raise InputError(source, number, "<line>", "must be a JSON object")
    if not isinstance(record.get("text"), str):
        raise InputError(source, number, "text", "must be a string")
    return LabelledDocument(text=record["text"], truth=_field(record, source, number))


def read_documents(path: Path) -> Iterator[LabelledDocument]:
    """The labelled documents of a JSONL file; a bad line raises InputError with its number."""
    source = str(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(source, 0, "file", exc.strerror or "cannot be read") from None
    with handle:
        for item in strict_records(handle, source):
            yield parse_record(item.value, source, item.line)


def evaluate_documents(path: Path) -> dict[str, Any]:
    """The figures of `tierflow eval documents --json` for one file."""
    scores = DocumentScores()
    for document in read_documents(path):
        scores.add(document)
    return scores.report()


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def documents_table(report: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("receipts", str(report["n"]))
    table.add_row("accepted without a model", _percent(report["accepted_share"]))
    for name, value in report["accepted_accuracy"].items():
        table.add_row(f"  exact {name} (accepted)", _percent(value))
    table.add_row("escalated", _percent(report["escalated_share"]))
    return table


def eval_documents(
    test: Annotated[Path, typer.Option("--test", help="JSONL of {text, fields} (shaped like SROIE)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object")] = False,
) -> None:
    """Share of documents the rules accept without a model, and their field accuracy."""
    report = evaluate_documents(test)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        Console().print(documents_table(report, f"document verdicts by rules: {test}"))


def register(eval_app: typer.Typer) -> None:
    """Add `documents` to the `tierflow eval` sub-app."""
    eval_app.command("documents")(eval_documents)
