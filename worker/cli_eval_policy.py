"""`tierflow eval policy --candidate VERSION`: a policy version's figures estimated from the store.

Off-policy evaluation (`routing.policy_estimate`, `routing.ope`) of any stored
version on the logged decisions, outcomes and propensities of the last
`reflect_window` judged attempts (with `--since`, of the jobs created since then):
success rate, cost per job and share per first tier, by IPS, self-normalised IPS
and doubly robust estimates with 90% intervals, beside what the logging policies
observed on the same jobs. This module must not import the tasks at import time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tierflow.routing.errors import InputError, TierflowError
from tierflow.routing.policy import Policy
from tierflow.store.db import transaction
from tierflow.store.policies import policy_version


def _report(version: int, since: datetime | None) -> dict[str, Any]:
    from tierflow.tasks.policy_estimate import estimate_version
    from tierflow.worker.cli_feedback import _runtime

    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        candidate = Policy.model_validate(policy_version(session, version).body)
    estimate, missing = estimate_version(runtime, candidate, since)
    if estimate is None:
        reason = f"no logged jobs with a propensity to estimate from ({missing} without one)"
        raise InputError("--candidate", 0, str(version), reason)
    return {"since": None if since is None else since.isoformat(), **estimate.as_dict()}


def _interval(row: dict[str, Any], money: bool) -> str:
    shown = "${:.6f}" if money else "{:.3f}"
    return f"{shown.format(row['value'])} [{shown.format(row['low'])}, {shown.format(row['high'])}]"


def _table(report: dict[str, Any]) -> Table:
    logged = report["logged"]
    title = f"policy version {report['version']}, estimated on {report['rows']} logged jobs"
    table = Table(title=title)
    for column in ("figure", "estimator", "candidate (90% interval)", "logged, observed"):
        table.add_column(column)
    for estimator, row in report["success"].items():
        table.add_row("success rate", estimator, _interval(row, False), f"{logged['success']:.3f}")
    for estimator, row in report["cost_per_job_usd"].items():
        table.add_row("cost per job", estimator, _interval(row, True), f"${logged['cost_per_job_usd']:.6f}")
    for tier, share in report["shares"].items():
        table.add_row(f"share starting on {tier}", "-", f"{share:.1%}", f"{logged['shares'][tier]:.1%}")
    table.add_row("left out: no propensity", "-", str(report["without_propensity"]), "")
    table.add_row("candidate's start never logged", "-", str(report["unsupported"]), "")
    table.add_row("effective rows", "-", f"{report['effective_rows']:.1f}", "")
    return table


def eval_policy(
    candidate: Annotated[int, typer.Option("--candidate", help="The policy version to estimate")],
    since: Annotated[
        datetime | None, typer.Option(help="Only jobs created since then (ISO time, UTC unless given)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Estimate a policy version's success, cost and tier shares from the logged decisions."""
    err = Console(stderr=True)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        report = _report(candidate, since)
    except TierflowError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(exc, InputError) else 1) from None
    if as_json:
        typer.echo(json.dumps(report))
    else:
        Console().print(_table(report))


def register(eval_app: typer.Typer) -> None:
    """Add `policy` to the `tierflow eval` sub-app."""
    eval_app.command("policy")(eval_policy)
