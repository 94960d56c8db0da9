"""`tierflow feedback`, `review`, `reflect` and `policy`: what people tell the router, and its policy.

Feedback is recorded per job for the tier that gave the final answer; reviews end a
held job; policy versions only grow (a rollback publishes an old body as a new version).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tierflow.routing.errors import InputError
from tierflow.routing.policy import policy_diff
from tierflow.store.db import transaction
from tierflow.store.feedback import decide_review, import_labels, read_labels, record_feedback, review_queue
from tierflow.store.policies import (
    active_policy,
    active_version,
    policy_history,
    policy_version,
    rollback_policy,
)

out = Console(soft_wrap=True)
policy_app = typer.Typer(add_completion=False, no_args_is_help=True)
LONG_LIST = 8


def _runtime() -> Any:
    from tierflow.worker.cli import _boot
    from tierflow.worker.cli_ops import require_schema

    _, runtime = _boot()
    require_schema(runtime.engine)
    return runtime


def feedback(
    job: Annotated[str | None, typer.Argument(help="Job id")] = None,
    correct: Annotated[bool, typer.Option("--correct", help="The final answer was right")] = False,
    incorrect: Annotated[bool, typer.Option("--incorrect", help="The final answer was wrong")] = False,
    rating: Annotated[int | None, typer.Option(min=1, max=5, help="A rating from 1 to 5")] = None,
    note: Annotated[str | None, typer.Option(help="Free text")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="JSONL of gold labels: job_id, correct or expected")
    ] = None,
) -> None:
    """Record a person's judgement of a job, or gold labels in bulk (--labels FILE)."""
    runtime = _runtime()
    if labels is not None:
        parsed = read_labels(labels)
        with transaction(runtime.sessions) as session:
            count = import_labels(session, labels, parsed)
        out.print(f"recorded {count} gold labels from {labels}")
        return
    if job is None or (correct and incorrect) or not (correct or incorrect or rating):
        raise InputError(
            "tierflow feedback", 0, "arguments", "give JOB and one of --correct, --incorrect, --rating"
        )
    verdict = True if correct else False if incorrect else None
    score = None if rating is None else (rating - 1) / 4
    with transaction(runtime.sessions) as session:
        record_feedback(session, job, "human", verdict, score, note)
    out.print(f"feedback recorded for {job}")


def review(
    decide: Annotated[str | None, typer.Option(help="Job id to decide on")] = None,
    accept: Annotated[bool, typer.Option("--accept", help="Accept the held answer")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Reject it: the job fails")] = False,
    note: Annotated[str | None, typer.Option(help="Why")] = None,
) -> None:
    """List the jobs held for a person, or record a person's decision on one (--decide JOB)."""
    runtime = _runtime()
    if decide is not None:
        if accept == reject:
            raise InputError("tierflow review", 0, "arguments", "give exactly one of --accept, --reject")
        with transaction(runtime.sessions) as session:
            decide_review(session, decide, accept, note)
        out.print(f"{decide}: {'accepted' if accept else 'rejected'}")
        return
    with transaction(runtime.sessions) as session:
        rows = review_queue(session)
    table = Table(title=f"{len(rows)} jobs held for review")
    for column in ("job", "kind", "tier", "why"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["job_id"], row["kind"], row["tier"] or "-", "; ".join(row["reasons"][-2:]))
    out.print(table)


@policy_app.command("show")
def policy_show(
    version: Annotated[int | None, typer.Argument(help="Version (default: active)")] = None,
) -> None:
    """Print a policy version as JSON."""
    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        body = (
            policy_version(session, version).body if version else (active_policy(session) or runtime.policy())
        )
    out.print_json(json.dumps(body if isinstance(body, dict) else body.model_dump(mode="json")))


def _estimated_success(statistics: dict[str, Any] | None) -> str | None:
    """reflect's off-policy estimate of the version before it was published, if it made one."""
    off_policy = (statistics or {}).get("off_policy") or {}
    if not off_policy.get("estimated"):
        return None
    gate, change = off_policy["candidate"]["success"]["dr"], off_policy["change"]
    parent = off_policy["parent"]["success"]["dr"]["value"]
    return (
        f"{gate['value']:.3f} [{gate['low']:.3f}, {gate['high']:.3f}] (90%, dr) vs parent {parent:.3f}: "
        f"change {change['value']:+.3f} [{change['low']:+.3f}, {change['high']:+.3f}]"
    )


@policy_app.command("history")
def policy_show_history() -> None:
    """Every policy version: parent, active, when, and why it was made."""
    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        rows = [
            (v.version, v.parent, v.active, v.created_at, v.reason, v.statistics, v.reflection)
            for v in policy_history(session)
        ]
    table = Table(title="policy versions")
    for column in ("version", "parent", "active", "created", "reason"):
        table.add_column(column)
    for version, parent, active, created, reason, _, _ in rows:
        table.add_row(
            str(version),
            str(parent or "-"),
            "yes" if active else "",
            created.isoformat(timespec="seconds"),
            reason,
        )
    out.print(table)
    for version, *_, statistics, reflection in rows:
        estimated = _estimated_success(statistics)
        if estimated is not None:
            out.print(f"version {version}: estimated success {estimated}", markup=False, highlight=False)
        if reflection:
            out.print(f"version {version}: {reflection}", markup=False, highlight=False)


@policy_app.command("stats")
def policy_stats(
    version: Annotated[int | None, typer.Argument(help="Version (default: active)")] = None,
) -> None:
    """What the reflect run that wrote a version saw, and its reflection, as JSON."""
    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        row = policy_version(session, version) if version else active_version(session)
        if row is None:
            raise InputError("tierflow policy stats", 0, "version", "no policy version is stored yet")
        body = {
            "version": row.version,
            "parent": row.parent,
            "reason": row.reason,
            "reflection": row.reflection,
            "statistics": row.statistics,
        }
    out.print_json(json.dumps(body))


def _brief(value: Any) -> Any:
    """`value` with every long list (a scorer's weights) replaced by its length."""
    if isinstance(value, list) and len(value) > LONG_LIST:
        return f"[{len(value)} values]"
    if isinstance(value, dict):
        return {key: _brief(item) for key, item in value.items()}
    return value


def _shown(value: Any) -> str:
    brief = _brief(value)
    return brief if isinstance(brief, str) and isinstance(value, list) else json.dumps(brief)


@policy_app.command("diff")
def policy_show_diff(old: int, new: int) -> None:
    """What changed from version OLD to version NEW."""
    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        before, after = (dict(policy_version(session, v).body) for v in (old, new))
    # the version numbers differ by definition; the diff is about what the policy does
    changes = policy_diff({**before, "version": None}, {**after, "version": None})
    for path, was, now in changes:
        out.print(f"{path}: {_shown(was)} -> {_shown(now)}", markup=False, highlight=False)
    if not changes:
        out.print("no differences")


@policy_app.command("rollback")
def policy_rollback(version: int) -> None:
    """Make an earlier version's body active again, as a new version."""
    runtime = _runtime()
    with transaction(runtime.sessions) as session:
        published = rollback_policy(session, version)
    out.print(f"version {published.version} is active: the policy of version {version}")


def reflect(
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as one JSON object")] = False,
) -> None:
    """Learn from the judged outcomes now, once (what beat does every reflect_interval_s)."""
    from tierflow.tasks.reflect import run_reflect

    done = run_reflect(_runtime())
    if as_json:
        typer.echo(json.dumps(done.as_dict()))
        return
    if done.published is None:
        out.print(f"version {done.from_version} stays active. {done.text}", markup=False)
    else:
        out.print(f"version {done.published} is active (from {done.from_version}). {done.text}", markup=False)


def register(cli: typer.Typer) -> None:
    cli.command()(reflect)
    cli.command()(feedback)
    cli.command()(review)
    cli.add_typer(policy_app, name="policy", help="Show, compare and roll back routing policy versions.")
