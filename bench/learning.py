"""The learned scorers' speed: training on N rows, and scoring one job once it is embedded.

    .venv/bin/python bench/learning.py [--rows 10000] [--width 397] [--repeat 2000]
                                       [--before-rev 35ff1ca] [--fit-repeats 1] [--json]

Rows are synthetic (a known logistic model over standard-normal features, the
width of tierflow's prompt features with the MiniLM embedding: 13 cheap + 384), so
nothing is read. Side by side in the same run, on the same rows:

- fit: `routing.scorers.fit_scorer` with its penalty chosen on held-out rows (what
  `reflect` runs), the same with the penalty fixed (what a later reflect run does),
  the same two with `routing/scorers.py` (and its `routing/logistic_fit.py`, where it had
  one) as it was at `--before-rev` (default 35ff1ca, the last Newton-only fit; "" skips
  it), and scikit-learn's LogisticRegression (lbfgs, the anchor), as seconds and ratios
  before/after, with the largest weight difference between the two trees' fits;
- score: one job through `routing.decision.decide` with a learned policy of three
  tier scorers, p50 and p99 in microseconds, against the rule-only decision.

Also reports the held-out accuracy and log loss of each fit, so speed is not bought with
quality. With `--fit-repeats N` each fit runs N times, the arms taking turns, and the
fastest run is reported with the median and the least CPU time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
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


def _module_at(rev: str, path: str, name: str) -> types.ModuleType | None:
    """The file `path` as it was at `rev`, run as a module of its own; None where it did not exist."""
    root = Path(__file__).resolve().parent.parent
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up there
    exec(compile(shown.stdout, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def scorers_at(rev: str) -> Any:
    """routing/scorers.py as it was at `rev`, with routing/logistic_fit.py of the same revision where
    it had one (scorers.py imports its solvers from there; nothing else of tierflow)."""
    solvers = _module_at(rev, "routing/logistic_fit.py", f"logistic_fit_{rev}")
    name = "tierflow.routing.logistic_fit"
    current = sys.modules.get(name)
    if solvers is not None:
        sys.modules[name] = solvers  # what the old scorers.py's import finds, for that import only
    try:
        module = _module_at(rev, "routing/scorers.py", f"scorers_{rev}")
    finally:
        if current is not None:
            sys.modules[name] = current
    if module is None:
        raise SystemExit(f"no routing/scorers.py at {rev}")
    return module


def _quality(model: Any, x: np.ndarray, good: np.ndarray) -> dict[str, float]:
    """Held-out accuracy and log loss of a fitted scorer."""
    p = np.clip(model.probability(x), 1e-12, 1 - 1e-12)
    loss = -np.mean(good * np.log(p) + (1 - good) * np.log(1 - p))
    return {"accuracy": float(np.mean((p > 0.5) == good)), "log_loss": float(loss)}


def _timings(seconds: list[float], cpu: list[float]) -> dict[str, float]:
    return {
        "seconds": min(seconds),
        "median_s": statistics.median(seconds),
        "cpu_s": min(cpu),
        "runs": len(seconds),
    }


def fits(rows: int, width: int, before_rev: str = "", repeats: int = 1) -> dict[str, Any]:
    """Each arm `repeats` times, the arms taking turns (a busy machine slows them alike); the
    fastest run of each (`seconds`), its median and the least CPU time."""
    x, good = synthetic(rows + 2000, width)
    train, test = slice(0, rows), slice(rows, rows + 2000)
    arms = {"tierflow": fit_scorer}
    if before_rev:
        arms["before"] = scorers_at(before_rev).fit_scorer
    chosen = fit_scorer(x[train], good[train])
    runs: dict[str, tuple[list[float], list[float]]] = {}
    models: dict[str, Any] = {}
    for _ in range(repeats):
        for prefix, fit in arms.items():
            for kind, grid in (("choose_l2", None), ("fixed_l2", (chosen.l2,))):
                args = (x[train], good[train]) if grid is None else (x[train], good[train], grid)
                cpu = time.process_time()
                seconds, model = _timed(lambda fit=fit, args=args: fit(*args))
                wall, spent = runs.setdefault(f"{prefix}_{kind}", ([], []))
                wall.append(seconds)
                spent.append(time.process_time() - cpu)
                models[f"{prefix}_{kind}"] = model
    figures: dict[str, Any] = {}
    for name, (wall, spent) in runs.items():
        figures[name] = {**_timings(wall, spent), **_quality(models[name], x[test], good[test])}
        figures[name]["l2"] = models[name].l2
    if before_rev:
        for kind in ("choose_l2", "fixed_l2"):
            after, before = (np.array(models[f"{p}_{kind}"].weights) for p in ("tierflow", "before"))
            key = "max_weight_difference" if kind == "choose_l2" else "max_weight_difference_fixed_l2"
            figures[key] = float(np.max(np.abs(after - before)))
            figures[f"ratio_{kind}_before_vs_after"] = (
                figures[f"before_{kind}"]["seconds"] / figures[f"tierflow_{kind}"]["seconds"]
            )
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return figures
    wall, spent = [], []
    for _ in range(repeats):
        cpu = time.process_time()
        seconds, anchor = _timed(lambda: LogisticRegression(max_iter=1000).fit(x[train], good[train]))
        wall.append(seconds)
        spent.append(time.process_time() - cpu)
    figures["sklearn_lbfgs"] = {**_timings(wall, spent), "accuracy": float(anchor.score(x[test], good[test]))}
    figures["ratio_fixed_vs_sklearn"] = (
        figures["tierflow_fixed_l2"]["seconds"] / figures["sklearn_lbfgs"]["seconds"]
    )
    figures["ratio_choose_vs_sklearn"] = (
        figures["tierflow_choose_l2"]["seconds"] / figures["sklearn_lbfgs"]["seconds"]
    )
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
    parser.add_argument("--fit-repeats", type=int, default=1, help="runs of each fit, taking turns")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "rows": args.rows,
        "width": args.width,
        "fit": fits(args.rows, args.width, args.before_rev, args.fit_repeats),
        "decide": scoring(args.width, args.repeat),
    }
    if args.json:
        print(json.dumps(report))
        return
    fit, score = report["fit"], report["decide"]
    for name, figures in fit.items():
        if isinstance(figures, dict):
            loss = f"  log loss {figures['log_loss']:.4f}" if "log_loss" in figures else ""
            print(
                f"fit {name:<20} {figures['seconds']:8.3f} s (median {figures['median_s']:.3f}, "
                f"CPU {figures['cpu_s']:.3f})   held-out accuracy {figures['accuracy']:.3f}{loss}"
            )
    if "max_weight_difference" in fit:
        print(f"{'max |weight after - before|':<36} {fit['max_weight_difference']:.1e}")
        print(f"{'  the same, penalty fixed':<36} {fit['max_weight_difference_fixed_l2']:.1e}")
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
