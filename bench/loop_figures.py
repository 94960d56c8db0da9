"""What a closed-loop run did, read from the store, and how it is printed (bench/closed_loop.py).

Owns the run's data model (`Prompt`, `Loop`), the figures of one phase (accuracy by the
recorded correctness of the answer a job ended with, first tiers, escalations, review,
cost from `expert_results`, the decisions' reasons), the always-small and always-large
references on the same prompts, and the printed report.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.services import conninfo


@dataclass(frozen=True)
class Prompt:
    """One recorded prompt: its job id stem, text, reference, and each tier model's recorded outcome."""

    key: str
    text: str
    reference: str | None
    responses: dict[str, str]
    correct: dict[str, bool]


@dataclass(frozen=True)
class Loop:
    """What the phases share: where things run, and which recorded model plays which tier."""

    workdir: Path
    env: dict[str, str]
    overrides: dict[str, Any]
    database_url: str
    small: str
    large: str
    deadline: float

    def model_of(self, tier: str) -> str:
        return self.small if tier == "small" else self.large


def final_answers(loop: Loop, tag: str) -> dict[str, tuple[str, str, str | None]]:
    """Per job of the phase: its state, the tier of its last attempt, and the answer it ended with."""
    query = """
        SELECT j.id, j.state, a.tier, r.output->>'answer'
        FROM jobs j
        JOIN attempts a ON a.job_id = j.id AND a.number = j.attempt
        LEFT JOIN results r ON r.job_id = j.id
        WHERE j.id LIKE %s
    """
    with psycopg.connect(conninfo(loop.database_url)) as connection:
        rows = connection.execute(query, (f"{tag}-%",)).fetchall()
    return {job: (state, tier, answer) for job, state, tier, answer in rows}


def judged_correct(loop: Loop, prompt: Prompt, tier: str, answer: str | None) -> bool | None:
    """The recorded correctness of the model whose replayed answer the job ended with; None when the
    answer is not the recording (the model's reply did not validate and the rules answered instead)."""
    model = loop.model_of(tier)
    return prompt.correct[model] if answer == prompt.responses[model] else None


# --- what a phase did ------------------------------------------------------------------------------

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def shape(reason: str) -> str:
    """A reason with its numbers blanked, so that reasons of one kind count together."""
    return NUMBER.sub("#", reason)


def attempt_rows(loop: Loop, tag: str) -> list[tuple[str, int, str, str | None, dict[str, Any], Any]]:
    query = """
        SELECT job_id, number, tier, verdict, decision, reasons FROM attempts WHERE job_id LIKE %s
    """
    with psycopg.connect(conninfo(loop.database_url)) as connection:
        return list(connection.execute(query, (f"{tag}-%",)).fetchall())


def model_cost(loop: Loop, tag: str) -> tuple[float, int]:
    """The cost of every model call the phase's jobs made, from the store, and how many calls."""
    query = """
        SELECT coalesce(sum(cost_usd), 0), coalesce(sum(json_array_length(calls)), 0)
        FROM expert_results WHERE job_id LIKE %s
    """
    with psycopg.connect(conninfo(loop.database_url)) as connection:
        row = connection.execute(query, (f"{tag}-%",)).fetchone()
    assert row is not None
    return float(row[0]), int(row[1])


def accuracy(loop: Loop, prompts: list[Prompt], tag: str) -> dict[str, int]:
    """Jobs right by the recorded correctness of the tier whose answer was accepted. A job held for
    review or failed counts as not right; an accepted answer that is not the recording is counted
    apart (and as not right)."""
    answers, counts = final_answers(loop, tag), Counter[str]()
    for prompt in prompts:
        state, tier, answer = answers[f"{tag}-{prompt.key}"]
        if state != "succeeded":
            continue
        correct = judged_correct(loop, prompt, tier, answer)
        counts["not_replayed" if correct is None else "correct" if correct else "wrong"] += 1
    return {key: counts[key] for key in ("correct", "wrong", "not_replayed")}


def phase_figures(loop: Loop, prompts: list[Prompt], tag: str, seconds: float) -> dict[str, Any]:
    attempts = attempt_rows(loop, tag)
    firsts = [row for row in attempts if row[1] == 1]
    states = Counter(state for state, _, _ in final_answers(loop, tag).values())
    jobs = len(prompts)
    right = accuracy(loop, prompts, tag)
    cost, calls = model_cost(loop, tag)
    escalated = {row[0] for row in attempts if row[1] > 1}
    why_first = Counter(shape(str(row[4]["reasons"][-1])) for row in firsts if row[4]["reasons"])
    why_up = Counter(
        shape(str((row[5] or {}).get("reasons", ["?"])[-1])) for row in attempts if row[3] == "escalate"
    )
    return {
        "jobs": jobs,
        "states": dict(states),
        "accuracy": right["correct"] / jobs,
        "answers": right,
        "first_tier": dict(Counter(row[2] for row in firsts)),
        "first_large_share": sum(row[2] == "large" for row in firsts) / jobs,
        "first_above_small_share": sum(row[2] != "small" for row in firsts) / jobs,
        "escalated_share": len(escalated) / jobs,
        "review_share": states.get("needs_review", 0) / jobs,
        "cost_usd": cost,
        "model_calls": calls,
        "seconds": seconds,
        "decided_by_versions": dict(Counter(str(row[4].get("policy_version")) for row in firsts)),
        "first_decision_reasons": dict(why_first.most_common(4)),
        "escalation_reasons": dict(why_up.most_common(4)),
    }


def references(loop: Loop, prompts: list[Prompt]) -> dict[str, Any]:
    """Always-small and always-large on these prompts: accuracy as recorded; cost from the file (prompt
    in, response out, list prices) and as served here (system prompt and JSON envelope included)."""
    from tierflow.providers.outcomes_data import LIST_PRICES
    from tierflow.providers.server.answers import default_strength, in_envelope
    from tierflow.providers.tokens import count_tokens
    from tierflow.routing.kinds.registry import recorded_prompt_kind

    kind = recorded_prompt_kind()
    answerer = kind.experts[0].build
    assert answerer is not None
    figures = {}
    for name, model in (("always_small", loop.small), ("always_large", loop.large)):
        price = LIST_PRICES[model]
        file_cost = served_cost = 0.0
        for prompt in prompts:
            asked = answerer({"prompt": prompt.text}, {})
            served_in = count_tokens(asked.system) + count_tokens(prompt.text)
            served = in_envelope(prompt.responses[model], asked.system, prompt.text, default_strength(model))
            served_out = min(asked.max_tokens, count_tokens(served))
            file_cost += price.cost(count_tokens(prompt.text), count_tokens(prompt.responses[model]))
            served_cost += price.cost(served_in, served_out)
        figures[name] = {
            "model": model,
            "accuracy": sum(prompt.correct[model] for prompt in prompts) / len(prompts),
            "cost_usd_file": file_cost,
            "cost_usd_served": served_cost,
        }
    return figures


def ratios(learned: dict[str, Any], v1: dict[str, Any]) -> dict[str, float | None]:
    keys = ("accuracy", "cost_usd", "first_above_small_share", "escalated_share", "seconds")
    return {key: (learned[key] / v1[key] if v1[key] else None) for key in keys}


# --- the report -----------------------------------------------------------------------------------


def print_report(figures: dict[str, Any]) -> None:
    m, d, s = figures["machine"], figures["data"], figures["settings"]
    print(f"\nmachine: {m['cpus']} CPUs, Python {m['python']}, Celery {m['celery']}, {m['platform']}")
    print(
        f"data: {d['path']}: {d['prompts']} prompts, learn {d['learn']}, use {d['use']} (seed {s['seed']}); "
        f"small = {d['small']}, large = {d['large']} (replayed)"
    )
    phase1 = figures["phase1"]
    first = phase1["figures"]
    print(
        f"phase 1 under version 1: first tier {first['first_tier']}, accuracy {first['accuracy']:.3f}, "
        f"escalated {first['escalated_share']:.1%}; gold labels {phase1['labels']}"
    )
    for version in figures["versions"]:
        print(f"version {version['version']} (parent {version['parent']}): {version['reason']}")
        if version["reflection"]:
            print(f"  reflection: {version['reflection']}")
    if phase1["reflect"]["published"] is None:
        print(f"reflect published nothing: {phase1['reflect']['reflection']}")
    p2, refs = figures["phase2"], figures["references"]
    header = (
        f"{'phase 2 (same prompts)':<26}{'jobs':>6}{'accuracy':>10}{'1st large':>11}{'1st >small':>12}"
        f"{'escalated':>11}{'review':>8}{'cost $':>10}{'wall s':>8}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for name, row in ((f"learned (v{p2['learned_version']})", p2["learned"]), ("v1 rules", p2["v1"])):
        print(
            f"{name:<26}{row['jobs']:>6}{row['accuracy']:>10.3f}{row['first_large_share']:>11.1%}"
            f"{row['first_above_small_share']:>12.1%}{row['escalated_share']:>11.1%}"
            f"{row['review_share']:>8.1%}{row['cost_usd']:>10.4f}{row['seconds']:>8.1f}"
        )
    for name, ref in refs.items():
        cost = f"{ref['cost_usd_served']:.4f}"
        print(
            f"{name.replace('_', '-') + ' (file)':<26}{d['use']:>6}{ref['accuracy']:>10.3f}{'':>52}{cost:>10}"
        )
    print(
        "\n(cost of the references as served here: system prompt and JSON envelope included; "
        "from the file alone: " + ", ".join(f"{n} {r['cost_usd_file']:.4f}" for n, r in refs.items()) + ")"
    )
    ratio = ", ".join(
        f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in figures["ratios_learned_over_v1"].items()
    )
    print(f"learned/v1: {ratio}")
    for name in ("learned", "v1"):
        row = p2[name]
        print(
            f"\n{name}: states {row['states']}; first tier {row['first_tier']}; answers {row['answers']}; "
            f"decided by versions {row['decided_by_versions']}; {row['model_calls']} model calls"
        )
        print(f"  first decisions: {row['first_decision_reasons']}")
        if row["escalation_reasons"]:
            print(f"  escalations: {row['escalation_reasons']}")
    print(f"\nprovider server: {figures['provider_server']}; wall {figures['wall_s']} s")
