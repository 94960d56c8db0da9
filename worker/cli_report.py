"""`tierflow report`: write the HTML report of a batch, of the jobs since a date, or of every job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tierflow.routing.errors import InputError
from tierflow.store.db import check_database, make_engine, make_sessions
from tierflow.store.report_queries import REPORT_SOURCE, Selection, parse_since
from tierflow.worker.settings import load_settings

err = Console(stderr=True, soft_wrap=True)


def selection_from(batch: str | None, since: str | None) -> Selection:
    """The jobs the options pick; InputError for both options at once or a bad date."""
    if batch is not None and since is not None:
        raise InputError(REPORT_SOURCE, 0, "--batch/--since", "give one of them, not both")
    return Selection(batch_id=batch, since=parse_since(since) if since is not None else None)


def report(
    html: Annotated[Path, typer.Option("--html", help="Where to write the page")],
    batch: Annotated[str | None, typer.Option(help="Only this batch")] = None,
    since: Annotated[str | None, typer.Option(help="Only jobs created since this date (YYYY-MM-DD)")] = None,
    last: Annotated[int, typer.Option(min=1, help="How many recent jobs' decisions to list")] = 20,
) -> None:
    """Write one self-contained HTML page: jobs, cost, rates, latency, policy versions, decisions."""
    from tierflow.worker.cli_ops import require_schema
    from tierflow.worker.report import write_report

    selection = selection_from(batch, since)
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        check_database(engine)
        require_schema(engine)
        data = write_report(make_sessions(engine), settings, selection, html, last)
    finally:
        engine.dispose()
    err.print(f"{data.total} jobs ({selection.describe()}) -> {html}", markup=False, highlight=False)


def register(cli: typer.Typer) -> None:
    cli.command("report")(report)
