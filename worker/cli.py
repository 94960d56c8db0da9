"""The `tierflow` command line: submit, watch and read batches; run the demo.

Other command groups live in their own modules and register here: cli_ops (worker,
beat, db, kb, reconcile, provider-server), cli_explain, cli_eval (+ documents, routing),
cli_report, cli_flower.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tierflow.routing.errors import InputError, TierflowError
from tierflow.store.db import check_database, transaction
from tierflow.store.reports import batch_exists, batch_results, batch_status
from tierflow.tasks.runtime import Runtime, runtime_for
from tierflow.tasks.submission import SubmitReport, submit_file
from tierflow.worker import (
    cli_eval,
    cli_eval_decomposition,
    cli_eval_documents,
    cli_eval_policy,
    cli_eval_routing,
    cli_explain,
    cli_feedback,
    cli_flower,
    cli_kinds,
    cli_metrics,
    cli_report,
    cli_serve,
    render,
)
from tierflow.worker.app import TierflowCelery, create_app
from tierflow.worker.cli_ops import ops, register, require_schema
from tierflow.worker.settings import Settings, load_settings

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tierflow: route LLM jobs to model tiers.",
)
cli.add_typer(ops, name="db", help="Apply or revert the database migrations.")
# Command groups, one module each.
register(cli)  # worker, beat, reconcile, provider-server, kb
cli_explain.register(cli)
cli_eval.register(cli)
cli_eval_documents.register(cli_eval.eval_app)
cli_eval_decomposition.register(cli_eval.eval_app)
cli_eval_routing.register(cli_eval.eval_app)
cli_eval_policy.register(cli_eval.eval_app)
cli_report.register(cli)
cli_flower.register(cli)
cli_feedback.register(cli)
cli_kinds.register(cli)
cli_serve.register(cli)  # serve, keys
cli_metrics.register(cli)
# soft_wrap: a FILE:LINE: field: reason line must stay one line, whatever the terminal width.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Format(str, Enum):
    JSONL = "jsonl"
    CSV = "csv"


def _boot(**overrides: Any) -> tuple[TierflowCelery, Runtime]:
    settings = load_settings(**overrides)
    app = create_app(settings)
    runtime = runtime_for(app)
    check_database(runtime.engine)
    return app, runtime


@contextlib.contextmanager
def _worker_if_embedded(app: TierflowCelery, runtime: Runtime) -> Iterator[None]:
    if runtime.settings.embedded:
        from tierflow.worker.embedded import embedded_worker

        with embedded_worker(app, runtime):
            yield
    else:
        require_schema(runtime.engine)
        yield


def wait_for_batch(runtime: Runtime, batch_id: str, timeout_s: float, quiet: bool = False) -> bool:
    """Poll the store until every job of the batch is terminal; False on timeout."""
    deadline = time.monotonic() + timeout_s
    with render.progress(quiet) as bar:
        task = bar.add_task("jobs", total=None)
        while True:
            with transaction(runtime.sessions) as session:
                status = batch_status(session, batch_id)
            done = sum(n for state, n in status.by_state.items() if state in render.TERMINAL)
            bar.update(task, total=status.total, completed=done)
            if done >= status.total:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)


@cli.command()
def submit(
    file: Annotated[Path, typer.Argument(help="JSONL file, one JobSpec per line")],
    wait: Annotated[bool, typer.Option(help="Wait until every job is terminal")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object")] = False,
    skip_invalid: Annotated[bool, typer.Option(help="Store the good lines and report the bad")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 3600.0,
) -> None:
    """Validate and enqueue a batch; print its batch id."""
    app, runtime = _boot()
    with _worker_if_embedded(app, runtime):
        report = submit_file(app, runtime, file, skip_invalid=skip_invalid)
        _print_submit(report, as_json)
        if report.batch_id is None:
            raise typer.Exit(2)
        waiting = wait or runtime.settings.embedded
        if waiting and not wait_for_batch(runtime, report.batch_id, timeout, quiet=as_json):
            err.print(f"error: batch {report.batch_id} not finished after {timeout:.0f}s")
            raise typer.Exit(1)


def _print_submit(report: SubmitReport, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
        return
    for line in report.issue_lines():
        err.print(line, markup=False, highlight=False)
    if report.batch_id is None:
        err.print(
            f"error: {report.source}: {len(report.rejected)} invalid lines; nothing was stored "
            "(use --skip-invalid to store the valid lines)"
        )
        return
    out.print(report.batch_id, markup=False, highlight=False)
    err.print(
        f"accepted {report.accepted}, already present {report.duplicates}, rejected {len(report.rejected)}"
    )


@cli.command()
def status(batch: Annotated[str, typer.Argument(help="Batch id")]) -> None:
    """Counts per state and per tier for a batch."""
    _, runtime = _boot()
    require_schema(runtime.engine)
    with transaction(runtime.sessions) as session:
        _require_batch(session, batch)
        out.print(render.status_table(batch_status(session, batch)))


@cli.command()
def results(
    batch: Annotated[str, typer.Argument(help="Batch id")],
    fmt: Annotated[Format, typer.Option("--format", help="jsonl or csv")] = Format.JSONL,
) -> None:
    """One row per job: output, tier path, cost, tokens, latency, verdict."""
    _, runtime = _boot()
    require_schema(runtime.engine)
    with transaction(runtime.sessions) as session:
        _require_batch(session, batch)
        rows = batch_results(session, batch)
    if fmt is Format.JSONL:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["job_id"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})


def _require_batch(session: Any, batch: str) -> None:
    if not batch_exists(session, batch):
        raise InputError("tierflow status/results", 0, "batch", f"no batch {batch!r}")


@cli.command()
def demo(
    files: Annotated[list[Path] | None, typer.Argument(help="Batches to run (default: examples/)")] = None,
    database: Annotated[Path, typer.Option(help="SQLite file for the demo; replaced each run")] = Path(
        ".tierflow/demo.db"
    ),
    kinds: Annotated[
        list[Path] | None,
        typer.Option(help="A kinds file to declare (repeatable); its .jsonl beside it is the batch"),
    ] = None,
) -> None:
    """Run the example batches through the whole pipeline in embedded mode and summarise."""
    from tierflow.worker.demo import run_demo

    report, summary, elapsed, reflected = run_demo(database, files, kinds=kinds)
    _print_submit(report, as_json=False)
    if report.batch_id is None:
        raise typer.Exit(2)
    out.print(render.summary_table(summary, elapsed))
    if reflected is not None:
        outcome = f"version {reflected.published} published" if reflected.published else "no change"
        out.print(f"reflect on these outcomes: {outcome}. {reflected.text}", markup=False, highlight=False)


def main() -> None:
    try:
        cli()
    except TierflowError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2 if isinstance(exc, InputError) else 1)


__all__ = ["cli", "main", "Settings"]
