"""Decision latency for rule-decided jobs: staged analysis + decide, in microseconds per job.

    .venv/bin/python bench/decision.py [--repeat N] [--json]

Jobs are the project's examples (examples/*.jsonl). Each is analysed and decided
`--repeat` times; the figures are the p50 and p99 of one job's analysis + decision,
and the same for the decision alone, measured with perf_counter_ns. No services.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import decide
from tierflow.routing.jobs import parse_lines
from tierflow.routing.policy import Policy
from tierflow.routing.stages import analyze

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def measure(repeat: int) -> dict[str, object]:
    lines = [
        line
        for name in ("support", "documents", "prompts")
        for line in (EXAMPLES / f"{name}.jsonl").read_text(encoding="utf-8").split("\n")
    ]
    jobs = [job.spec for job in parse_lines(lines).jobs]
    policy = Policy()
    whole, decision_only = [], []
    for _ in range(repeat):
        for spec in jobs:
            ctx = DecisionContext(job_id=spec.job_id())
            started = time.perf_counter_ns()
            analysis = analyze(spec.kind, spec.payload, policy)
            middle = time.perf_counter_ns()
            decide(spec.kind, analysis, policy, ctx)
            ended = time.perf_counter_ns()
            whole.append((ended - started) / 1000)
            decision_only.append((ended - middle) / 1000)
    return {
        "jobs": len(jobs),
        "samples": len(whole),
        "analysis_and_decision_us": {
            "p50": percentile(whole, 0.5),
            "p99": percentile(whole, 0.99),
            "mean": statistics.fmean(whole),
        },
        "decision_us": {"p50": percentile(decision_only, 0.5), "p99": percentile(decision_only, 0.99)},
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.repeat)
    if args.json:
        print(json.dumps(figures))
        return
    both, alone = figures["analysis_and_decision_us"], figures["decision_us"]
    sizes = f"{figures['jobs']} example jobs x {args.repeat} = {figures['samples']} samples"
    print(f"{sizes}, Python {figures['python']}")
    print(
        f"analysis + decision: p50 {both['p50']:.1f} us, p99 {both['p99']:.1f} us, mean {both['mean']:.1f} us"
    )  # type: ignore[index]
    print(f"decision alone:      p50 {alone['p50']:.1f} us, p99 {alone['p99']:.1f} us")  # type: ignore[index]


if __name__ == "__main__":
    main()
