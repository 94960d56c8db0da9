"""`tierflow explain JOB`: the whole path of one job, as a tree or as JSON."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from tierflow.routing.errors import InputError
from tierflow.store.db import transaction
from tierflow.store.trace import job_trace

out = Console(soft_wrap=True)


def _add(node: Tree, label: str) -> Tree:
    """A branch of plain text: outputs and reasons may contain [brackets] that are not markup."""
    return node.add(Text(label))


def limits_line(metadata: dict[str, Any] | None) -> str | None:
    """The job's budget and deadline as stored: its own, or its kind's defaults."""
    metadata = metadata or {}
    parts = []
    if metadata.get("budget_usd") is not None:
        parts.append(f"budget ${float(metadata['budget_usd']):.6f}")
    if metadata.get("deadline"):
        parts.append(f"deadline {metadata['deadline']}")
    return f"limits: {', '.join(parts)}" if parts else None


def _analysis_branch(tree: Tree, analysis: dict[str, Any] | None) -> None:
    if not analysis:
        _add(tree, "analysis: not classified yet")
        return
    node = _add(
        tree,
        f"analysis ({analysis['stage']}): intent {analysis['intent']}, "
        f"difficulty {analysis['difficulty']:.2f}, risk {analysis['risk']:.2f}, "
        f"confidence {analysis['confidence']:.2f}",
    )
    for reason in analysis.get("reasons", []):
        _add(node, reason)


def specialist_line(decision: dict[str, Any]) -> str | None:
    """The specialist an attempt ran as, the intent that chose it and the analysis stage that
    decided; None for a kind without specialists (or a decision stored before they were)."""
    if not decision.get("specialist"):
        return None
    return (
        f"specialist {decision['specialist']}: intent {decision.get('intent') or '-'}, "
        f"decided by the {decision.get('stage') or '-'} stage"
    )


def _decision_branch(node: Tree, decision: dict[str, Any]) -> None:
    specialist = specialist_line(decision)
    if specialist:
        _add(node, specialist)
    why = _add(node, f"decision: models {', '.join(decision.get('models', [])) or '-'}")
    for reason in decision.get("reasons", []):
        _add(why, reason)
    if decision.get("shadow"):
        _add(why, f"shadow decision (not executed): {decision['shadow'].get('tier')}")


def _attempt_branch(tree: Tree, attempt: dict[str, Any]) -> None:
    decision = attempt["decision"]
    arm = f", arm {decision['arm']}" if decision.get("arm") else ""
    quality = attempt["quality"] if attempt["quality"] is not None else "-"
    node = _add(
        tree,
        f"attempt {attempt['number']} on {attempt['tier']} ({decision.get('strategy', '-')}, "
        f"policy v{decision.get('policy_version', '?')}{arm}) -> {attempt['verdict'] or 'pending'} "
        f"(quality {quality}), worker {attempt['worker'] or '-'}",
    )
    _decision_branch(node, decision)
    if decision.get("search"):
        _add(node, search_line(decision["search"], attempt["experts"]))
    for expert in attempt["experts"]:
        status = f"error: {expert['error']}" if expert["error"] else f"confidence {expert['confidence']}"
        leaf = _add(
            node,
            f"{expert['expert']} ({expert['model'] or 'rules'}) {status}, ${expert['cost_usd']:.6f}, "
            f"{expert['tokens']} tokens, {expert['latency_s']:.3f}s",
        )
        for call in expert["calls"]:
            _add(leaf, f"call {call['model']}: {call['outcome']}, {call['latency_s']:.3f}s")
    for reason in attempt["reasons"]:
        _add(node, f"verdict: {reason}")


def search_line(search: dict[str, Any], experts: list[dict[str, Any]]) -> str:
    """A strategy search step (routing/search.py): which step, how many model steps so far, its cost."""
    plan = search.get("plan", {})
    cost = sum(float(expert["cost_usd"] or 0.0) for expert in experts)
    carried = sorted(k for k in search.get("carried", {}) if k != "draft_quality")
    return (
        f"search {search.get('key')}: step {search.get('step')} of {' -> '.join(plan.get('order', []))}, "
        f"model steps {search.get('steps')}/{plan.get('max_steps')}, cost ${cost:.6f}, "
        f"carried {', '.join(carried) or 'nothing'}"
    )


def render_trace(trace: dict[str, Any]) -> Tree:
    latency = f"{trace['latency_s']:.2f}s" if trace["latency_s"] is not None else "-"
    tree = Tree(
        Text(
            f"job {trace['job_id']} ({trace['kind']}): {trace['state']}, ${trace['cost_usd']:.6f}, "
            f"{trace['tokens']} tokens, {latency}"
        )
    )
    limits = limits_line(trace.get("metadata"))
    if limits:
        _add(tree, limits)
    if trace.get("parent"):
        _add(tree, f"child of {trace['parent']}")
    _analysis_branch(tree, trace["analysis"])
    _split_branch(tree, trace["analysis"], trace.get("children", []))
    for attempt in trace["attempts"]:
        _attempt_branch(tree, attempt)
    if trace["result"]:
        result = trace["result"]
        _add(tree, f"result: {result['verdict']} at {result['tier']}: {json.dumps(result['output'])}")
    _feedback_branch(tree, trace.get("feedback", []), trace.get("judgement"))
    return tree


def _split_branch(tree: Tree, analysis: dict[str, Any] | None, children: list[dict[str, Any]]) -> None:
    """A decomposed job's split: who split it, each ask's child and its route, the family's cost."""
    split = (analysis or {}).get("split") or {}
    parts = split.get("parts") or []
    if not parts:
        return
    family = sum(child["cost_usd"] for child in children)
    node = _add(tree, f"split by {split.get('by')} into {len(parts)} asks; children cost ${family:.6f}")
    for n, part in enumerate(parts):
        child = children[n] if n < len(children) else None
        if child is None:
            _add(node, f"{n + 1}. {part['text']!r}: no child")
            continue
        route = f"specialist {child['specialist'] or '-'} (intent {child['intent'] or '-'}, "
        route += f"{child['stage'] or '-'})"
        _add(
            node,
            f"{n + 1}. {child['job_id']}: {part['text']!r} -> {route}, {child['tier'] or '-'} tier, "
            f"{child['attempts']} attempt(s), {child['state']}, ${child['cost_usd']:.6f}",
        )


def _feedback_branch(tree: Tree, feedback: list[dict[str, Any]], judgement: dict[str, Any] | None) -> None:
    for row in feedback:
        said = {True: "correct", False: "incorrect", None: "-"}[row["correct"]]
        score = f", score {row['score']:.2f}" if row["score"] is not None else ""
        note = f": {row['note']}" if row["note"] else ""
        _add(tree, f"feedback ({row['source']}, {row['tier'] or '-'}): {said}{score}{note}")
    if judgement is not None:
        score = f"{judgement['score']:g}/10" if judgement["score"] is not None else "no grade"
        _add(
            tree,
            f"judge ({judgement['model'] or '-'}): {judgement['state']}, {score}, "
            f"${judgement['cost_usd']:.6f}: {judgement['reason'] or '-'}",
        )


def register(cli: typer.Typer) -> None:
    @cli.command()
    def explain(
        job: Annotated[str, typer.Argument(help="Job id")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the trace as JSON")] = False,
    ) -> None:
        """The whole path of a job: analysis, each attempt's decision and experts, verdict, cost."""
        from tierflow.worker.cli import _boot
        from tierflow.worker.cli_ops import require_schema

        _, runtime = _boot()
        require_schema(runtime.engine)
        with transaction(runtime.sessions) as session:
            trace = job_trace(session, job)
        if trace is None:
            raise InputError("tierflow explain", 0, "job", f"no job {job!r}")
        if as_json:
            out.print_json(json.dumps(trace, default=str))
        else:  # a pipe or a file gets whole lines, not lines cut at 80 columns
            (out if out.is_terminal else Console(width=400)).print(render_trace(trace))
