"""Rich tables and progress for the command line."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tierflow.routing.states import TERMINAL_STATES, JobState, Tier
from tierflow.store.reports import BatchStatus

TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


def progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=False,
    )


def status_table(status: BatchStatus) -> Table:
    table = Table(title=f"batch {status.batch_id}: {status.total} jobs")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state in JobState:
        if status.by_state.get(state.value):
            table.add_row(state.value, str(status.by_state[state.value]))
    table.add_section()
    for tier in [*(t.value for t in Tier), "-"]:
        if status.by_tier.get(tier):
            table.add_row(f"tier {tier}", str(status.by_tier[tier]))
    if status.children:
        table.add_section()
        for state in JobState:
            if status.children.get(state.value):
                table.add_row(f"children {state.value}", str(status.children[state.value]))
    return table


def _money(value: float) -> str:
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def summary_table(summary: dict[str, Any], elapsed_s: float) -> Table:
    table = Table(title=f"tierflow demo: {summary['jobs']} jobs in {elapsed_s:.1f}s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for tier in Tier:
        first = summary["first_tier"].get(tier.value, 0)
        final = summary["final_tier"].get(tier.value, 0)
        table.add_row(f"tier {tier.value}: routed first / answered last", f"{first} / {final}")
    table.add_row("escalations", str(summary["escalations"]))
    states = summary["states"]
    for state in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW, JobState.NEEDS_CLARIFICATION, JobState.FAILED):
        if state is not JobState.NEEDS_CLARIFICATION or states.get(state.value):  # only a search asks
            table.add_row(state.value.replace("_", " "), str(states.get(state.value, 0)))
    table.add_section()
    table.add_row("total cost", _money(summary["total_cost_usd"]))
    table.add_row("cost per job", _money(summary["cost_per_job_usd"]))
    table.add_row("latency p50", _seconds(summary["latency_p50_s"]))
    table.add_row("latency p95", _seconds(summary["latency_p95_s"]))
    return table
