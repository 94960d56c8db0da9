"""`tierflow eval decomposition`: how well multi-ask tickets are split and routed, and what that costs.

The file holds jobs as `tierflow submit` takes them; the gold file beside it
(`NAME.gold.jsonl`, or `--gold`) gives each job's asks as `{"id", "asks": [{"text",
"specialist"}]}`, one ask for a job that should not be split. Two arms are run on the same
jobs: the rules alone, and the rules with the LLM stage proposing sub-tasks wherever the
rules find none (the offline models the local provider server answers from, so the figures
repeat). A predicted child matches a gold ask when it holds at least 60% of the ask's
words, each ask matched once. Reported per arm: the children's precision and recall, the
tickets split right, the matched children's specialist accuracy (each child routed by the
same staged analysis a worker runs, without the semantic stage), and the estimated cost of
answering the children on their own tiers against answering each whole ticket on the
large tier.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tierflow.providers.pricing import price_table
from tierflow.providers.rules import answer as offline_answer
from tierflow.providers.tokens import count_tokens
from tierflow.routing.analysis import job_text
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import decide
from tierflow.routing.decompose import child_payload, plan_split
from tierflow.routing.errors import InputError
from tierflow.routing.experts import Prompt
from tierflow.routing.jobs import JobSpec
from tierflow.routing.jsonl import loads
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry
from tierflow.routing.kinds.spec import KindSpec
from tierflow.routing.policy import Policy
from tierflow.routing.specialists import choose_specialist
from tierflow.routing.stages import analyze, builtin_intents
from tierflow.routing.states import Tier

MATCH_SHARE = 0.6
# the offline small tier's strength: the LLM stage runs on the cheapest tier's models
SMALL_STRENGTH = 0.55
WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def offline_llm(prompt: Prompt) -> str:
    return offline_answer(prompt.system, prompt.user, SMALL_STRENGTH)


def read_pairs(jobs_path: Path, gold_path: Path) -> list[tuple[JobSpec, list[dict[str, str]]]]:
    """The jobs and their gold asks, by id; a job without gold, or gold without a job, is an error."""
    gold: dict[str, list[dict[str, str]]] = {}
    for number, line in enumerate(gold_path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        record = loads(line)
        asks = record.get("asks") if isinstance(record, dict) else None
        if (
            not isinstance(asks, list)
            or not asks
            or not all(isinstance(a, dict) and a.get("text") for a in asks)
        ):
            raise InputError(str(gold_path), number, "asks", "a non-empty list of {text, specialist}")
        gold[str(record.get("id"))] = asks
    pairs = []
    for number, line in enumerate(jobs_path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        spec = JobSpec.model_validate(loads(line))
        if spec.job_id() not in gold:
            raise InputError(
                str(gold_path), 0, "id", f"no gold asks for job {spec.job_id()!r} ({jobs_path}:{number})"
            )
        pairs.append((spec, gold.pop(spec.job_id())))
    if gold:
        raise InputError(
            str(gold_path), 0, "id", f"gold for jobs not in {jobs_path}: {', '.join(sorted(gold))}"
        )
    return pairs


def _matches(predicted: list[str], asks: list[dict[str, str]]) -> list[tuple[int, int]]:
    """(predicted, gold) pairs, greedily by share of the gold ask's words the part holds."""
    scored = []
    for p, part in enumerate(predicted):
        for g, ask in enumerate(asks):
            words = _words(ask["text"])
            share = len(words & _words(part)) / max(len(words), 1)
            if share >= MATCH_SHARE:
                scored.append((share, p, g))
    used_p: set[int] = set()
    used_g: set[int] = set()
    pairs = []
    for _, p, g in sorted(scored, reverse=True):
        if p not in used_p and g not in used_g:
            used_p.add(p)
            used_g.add(g)
            pairs.append((p, g))
    return pairs


PRICES = {ref: (p.input_per_million, p.output_per_million) for ref, p in price_table({}).items()}


def _context(text: str) -> DecisionContext:
    return DecisionContext(job_tokens=count_tokens(text), prices=PRICES)


def _route(kind: KindSpec, payload: dict[str, Any], policy: Policy, llm: Any) -> tuple[str | None, float]:
    """The specialist a job's staged analysis selects, and its first decision's estimated cost."""
    analysis = analyze(kind, payload, policy, llm=llm)
    choice = choose_specialist(kind, analysis)
    decision = decide(kind, analysis, policy, _context(job_text(kind, payload)))
    return (choice.specialist if choice else None), float(decision.estimated_cost_usd or 0.0)


def _whole_on_large(kind: KindSpec, payload: dict[str, Any], policy: Policy) -> float:
    analysis = analyze(kind, payload, policy)
    decision = decide(kind, analysis, policy, _context(job_text(kind, payload)), floor=Tier.LARGE)
    return float(decision.estimated_cost_usd or 0.0)


def evaluate_arm(
    pairs: list[tuple[JobSpec, list[dict[str, str]]]], kinds: KindRegistry, policy: Policy, with_llm: bool
) -> dict[str, Any]:
    predicted_children = gold_children = matched = right_split = routed_right = 0
    cost = large = 0.0
    llm = offline_llm if with_llm else None
    for spec, asks in pairs:
        kind = kinds.get(spec.kind)
        # the LLM arm asks it as for a job whose analysis needed the LLM stage
        split = plan_split(
            kind, spec.payload, 0, policy.intents or builtin_intents(kind), llm, unsure=with_llm
        )
        parts = [part.text for part in split.parts]
        several = len(asks) >= 2
        right_split += bool(parts) == several
        predicted_children += len(parts)
        gold_children += len(asks) if several else 0
        pairs_found = _matches(parts, asks) if several else []
        matched += len(pairs_found)
        for p, g in pairs_found:
            specialist, _ = _route(kind, child_payload(kind, spec.payload, parts[p]), policy, llm)
            routed_right += specialist == asks[g].get("specialist")
        if parts:
            cost += sum(
                _route(kind, child_payload(kind, spec.payload, part), policy, llm)[1] for part in parts
            )
        else:
            cost += _route(kind, spec.payload, policy, llm)[1]
        large += _whole_on_large(kind, spec.payload, policy)
    return {
        "arm": "rules+llm" if with_llm else "rules",
        "jobs": len(pairs),
        "split_right": right_split / len(pairs) if pairs else None,
        "precision": matched / predicted_children if predicted_children else None,
        "recall": matched / gold_children if gold_children else None,
        "specialist_accuracy": routed_right / matched if matched else None,
        "cost_usd": round(cost, 8),
        "whole_on_large_usd": round(large, 8),
        "cost_vs_large": cost / large if large else None,
    }


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def decomposition_table(reports: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("measure")
    for report in reports:
        table.add_column(report["arm"], justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("jobs", lambda r: str(r["jobs"])),
        ("tickets split right", lambda r: _figure(r["split_right"])),
        ("children precision", lambda r: _figure(r["precision"])),
        ("children recall", lambda r: _figure(r["recall"])),
        ("specialist accuracy (matched)", lambda r: _figure(r["specialist_accuracy"])),
        ("estimated cost", lambda r: f"${r['cost_usd']:.6f}"),
        ("whole ticket on large", lambda r: f"${r['whole_on_large_usd']:.6f}"),
        ("cost / whole on large", lambda r: _figure(r["cost_vs_large"])),
    ]
    for name, cell in rows:
        table.add_row(name, *(cell(report) for report in reports))
    return table


def eval_decomposition(
    file: Annotated[Path, typer.Option("--file", help="JSONL of jobs as `tierflow submit` takes them")],
    gold: Annotated[
        Path | None, typer.Option("--gold", help="Their asks (default: FILE with .gold.jsonl)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON")] = False,
) -> None:
    """Decomposition precision and recall, specialist accuracy and cost, rules against rules+LLM."""
    gold_path = gold or file.with_name(file.name.removesuffix(".jsonl") + ".gold.jsonl")
    pairs = read_pairs(file, gold_path)
    kinds, policy = builtin_registry(), Policy()
    reports = [evaluate_arm(pairs, kinds, policy, with_llm) for with_llm in (False, True)]
    if as_json:
        typer.echo(json.dumps(reports))
    else:
        Console().print(decomposition_table(reports, f"decomposition: {file}"))


def register(eval_app: typer.Typer) -> None:
    """Add `decomposition` to the `tierflow eval` sub-app."""
    eval_app.command("decomposition")(eval_decomposition)
