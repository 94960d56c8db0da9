"""The learned scorers' speed: training on N rows, and scoring one job once it is embedded.

    .venv/bin/python bench/learning.py [--rows 10000] [--width 397] [--repeat 2000]
                                       [--before-rev 35ff1ca] [--json]

Rows are synthetic (a known logistic model over standard-normal features, the
width of tierflow's prompt features with the MiniLM embedding: 13 cheap + 384), so
nothing is read. Side by side in the same run, on the same rows:

- fit: `routing.scorers.fit_scorer` with its penalty chosen on held-out rows (what
  `reflect` runs), the same with the penalty fixed (what a later reflect run does),
  the same two with `routing/scorers.py` as it was at `--before-rev` (default 35ff1ca,
  the last Newton-only fit; "" skips it), and scikit-learn's LogisticRegression (lbfgs,
  the anchor), as seconds and ratios before/after;
- score: one job through `routing.decision.decide` with a learned policy of three
  tier scorers, p50 and p99 in microseconds, against the rule-only decision.

Also reports the held-out accuracy of each fit, so speed is not bought with quality.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import decide
from tierflow.routing.kinds.registry import recorded_prompt_kind
from tierflow.routing.learning import LearnedRouting
from tierflow.routing.policy import Policy
from tierflow.routing.scorers import fit_scorer
from tierflow.routing.states import Tier

EASY = Analysis("general", "general", 0.1, 0.0, False, 0.9, "rules")


def synthetic(rows: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, width))
    truth = rng.normal(size=width) / np.sqrt(width) * 3
    good = rng.random(rows) < 1 / (1 + np.exp(-(x @ truth)))
    return x, good


def _timed(fit: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    model = fit()
    return time.perf_counter() - started, model


def scorers_at(rev: str) -> Any:
    """routing/scorers.py as it was at `rev`, loaded as a module of its own (it imports no tierflow)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{rev}:routing/scorers.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(f"scorers_{rev}")
    exec(compile(source, f"{rev}:routing/scorers.py", "exec"), module.__dict__)
    return module


def _tierflow_fits(fit: Any, x: np.ndarray, good: np.ndarray, prefix: str) -> dict[str, Any]:
    train, test = slice(0, x.shape[0] - 2000), slice(x.shape[0] - 2000, None)
    figures: dict[str, Any] = {}
    seconds, chosen = _timed(lambda: fit(x[train], good[train]))
    figures[f"{prefix}_choose_l2"] = {
        "seconds": seconds,
        "accuracy": float(np.mean((chosen.probability(x[test]) > 0.5) == good[test])),
        "l2": chosen.l2,
        "weights": np.array(chosen.weights),
    }
    seconds, fixed = _timed(lambda: fit(x[train], good[train], (chosen.l2,)))
    figures[f"{prefix}_fixed_l2"] = {
        "seconds": seconds,
        "accuracy": float(np.mean((fixed.probability(x[test]) > 0.5) == good[test])),
        "l2": fixed.l2,
    }
    return figures


def fits(rows: int, width: int, before_rev: str = "") -> dict[str, Any]:
    x, good = synthetic(rows + 2000, width)
    train, test = slice(0, rows), slice(rows, rows + 2000)
    figures = _tierflow_fits(fit_scorer, x, good, "tierflow")
    after = figures["tierflow_choose_l2"].pop("weights")
    if before_rev:
        figures.update(_tierflow_fits(scorers_at(before_rev).fit_scorer, x, good, "before"))
        before = figures["before_choose_l2"].pop("weights")
        figures["max_weight_difference"] = float(np.max(np.abs(after - before)))
        for kind in ("choose_l2", "fixed_l2"):
            figures[f"ratio_{kind}_before_vs_after"] = (
                figures[f"before_{kind}"]["seconds"] / figures[f"tierflow_{kind}"]["seconds"]
            )
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return figures
    seconds, anchor = _timed(lambda: LogisticRegression(max_iter=1000).fit(x[train], good[train]))
    figures["sklearn_lbfgs"] = {"seconds": seconds, "accuracy": float(anchor.score(x[test], good[test]))}
    figures["ratio_fixed_vs_sklearn"] = figures["tierflow_fixed_l2"]["seconds"] / seconds
    figures["ratio_choose_vs_sklearn"] = figures["tierflow_choose_l2"]["seconds"] / seconds
    return figures


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def scoring(width: int, repeat: int) -> dict[str, Any]:
    x, good = synthetic(3000, width, seed=1)
    scorers = {tier: fit_scorer(x, good, (1.0,)) for tier in (Tier.SMALL, Tier.MEDIUM, Tier.LARGE)}
    learned = LearnedRouting(encoder="local", tiers=scorers, gain_threshold=0.1)
    policies = {"learned": Policy(learned={recorded_prompt_kind().name: learned}), "rules": Policy()}
    out: dict[str, Any] = {}
    for name, policy in policies.items():
        samples = []
        for i in range(repeat):
            ctx = DecisionContext(job_id=f"j{i}", prompt_features=x[i % len(x)])
            started = time.perf_counter_ns()
            decide(recorded_prompt_kind(), EASY, policy, ctx)
            samples.append((time.perf_counter_ns() - started) / 1000)
        out[name] = {"p50_us": percentile(samples, 0.5), "p99_us": percentile(samples, 0.99)}
        out[name]["mean_us"] = statistics.fmean(samples)
    out["ratio_learned_vs_rules_p50"] = out["learned"]["p50_us"] / out["rules"]["p50_us"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=397)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--before-rev", default="35ff1ca", help='a git revision to fit beside; "": none')
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "rows": args.rows,
        "width": args.width,
        "fit": fits(args.rows, args.width, args.before_rev),
        "decide": scoring(args.width, args.repeat),
    }
    if args.json:
        print(json.dumps(report))
        return
    fit, score = report["fit"], report["decide"]
    for name, figures in fit.items():
        if isinstance(figures, dict):
            print(f"fit {name:<20} {figures['seconds']:8.3f} s   held-out accuracy {figures['accuracy']:.3f}")
    if "max_weight_difference" in fit:
        print(f"{'max |weight after - before|':<36} {fit['max_weight_difference']:.1e}")
    for key in (
        "ratio_choose_l2_before_vs_after",
        "ratio_fixed_l2_before_vs_after",
        "ratio_fixed_vs_sklearn",
        "ratio_choose_vs_sklearn",
    ):
        if key in fit:
            print(f"{key:<36} {fit[key]:.2f}x")
    for name in ("learned", "rules"):
        print(f"decide {name:<8} p50 {score[name]['p50_us']:7.1f} us   p99 {score[name]['p99_us']:7.1f} us")
    print(f"learned / rules decide p50: {score['ratio_learned_vs_rules_p50']:.2f}x")


if __name__ == "__main__":
    main()
