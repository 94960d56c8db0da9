"""Off-policy estimates checked against the truth, on recorded outcomes of both tiers.

    .venv/bin/python bench/ope.py [--data ../shared/data/routellm/gsm8k.jsonl] [--seeds 200]
                                  [--explore 0.1] [--level 0.9] [--json]

Every prompt of a routellm-shaped file records both tiers' outcomes, so what any
routing policy would have achieved on it is known exactly. That makes the file a
test bench for `routing.ope`:

1. The prompts are split once (seed 0) into a fitting half and a population half.
   On the fitting half, logistic scorers P(good | prompt's cheap features) are fitted
   per tier (`routing.scorers`); their gain (large minus small) ranks prompts.
2. The logging policy sends the prompts whose gain is above the fitting half's
   median to large, and explores: with probability `--explore` it takes the other
   tier, so the propensity of what it took is 1 - explore or explore.
3. Each candidate is a different cut of the same gain (20% and 40% to large) or
   always-small. Its true success and cost per job are its mean over the whole
   population half.
4. Each seed draws a bootstrap sample of the population (as many prompts, with
   replacement), logs it under the logging policy, observes only the tier it took,
   and estimates each candidate's success and cost with IPS, SNIPS and DR (outcome
   model: the fitted scorers for success, each tier's mean cost on the fitting half
   for cost), with `--level` intervals.

Printed per candidate, quantity and estimator: the truth, the mean estimate, the
bias (as a ratio of the truth too), the RMSE, the interval's coverage over the seeds
and its mean half-width; beside them the naive figure (the logged mean, what the
logging policy observed), which is what the candidate is wrongly credited with
without a correction.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tierflow.providers.outcomes_data import LIST_PRICES, choose_tiers, prompt_outcomes, read_recorded
from tierflow.routing.ope import Estimator, LoggedStream, estimate_all
from tierflow.routing.scorers import fit_scorer, prompt_features

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout, or this machine's shared folder (a worktree has none beside it)
DATA_DIRS = (ROOT.parent / "shared" / "data", Path("/work/shared/data"))
DEFAULT_DATA = next(
    (d / "routellm" / "gsm8k.jsonl" for d in DATA_DIRS if (d / "routellm").is_dir()), DATA_DIRS[0]
)
CANDIDATE_SHARES = {"large 20%": 0.2, "large 40%": 0.4, "always small": 0.0}


@dataclass(frozen=True)
class Population:
    """The population half: per prompt, each tier's outcome and cost, and the fitted views."""

    good: NDArray[np.float64]  # (n, 2): small, large
    cost: NDArray[np.float64]  # (n, 2)
    gain: NDArray[np.float64]  # fitted P(large good) - P(small good)
    predicted: NDArray[np.float64]  # (n, 2) fitted P(good) per tier
    mean_cost: NDArray[np.float64]  # (2,) per-tier mean cost on the fitting half
    cuts: dict[str, float]  # candidate -> gain threshold; "logging" too


def load(path: Path) -> Population:
    records = read_recorded(path)
    tiers = choose_tiers(records, records)
    outcomes = prompt_outcomes(records, tiers, LIST_PRICES)
    features = prompt_features([r.text for r in records], None)
    good = np.column_stack([outcomes.small_quality, outcomes.large_quality])
    cost = np.column_stack([outcomes.small_cost, outcomes.large_cost])
    order = np.random.default_rng(0).permutation(len(records))
    fit, population = order[: len(order) // 2], order[len(order) // 2 :]
    small = fit_scorer(features[fit], good[fit, 0] > 0.5)
    large = fit_scorer(features[fit], good[fit, 1] > 0.5)
    predicted = np.column_stack([small.probability(features), large.probability(features)])
    gain = predicted[:, 1] - predicted[:, 0]
    cuts = {"logging": float(np.quantile(gain[fit], 0.5))}
    for name, share in CANDIDATE_SHARES.items():
        cuts[name] = float(np.quantile(gain[fit], 1 - share)) if share > 0 else np.inf
    return Population(
        good[population], cost[population], gain[population], predicted[population], cost[fit].mean(0), cuts
    )


def one_hot(large: NDArray[np.bool_]) -> NDArray[np.float64]:
    return np.column_stack([~large, large]).astype(np.float64)


def truth(population: Population, candidate: str) -> dict[str, float]:
    chosen = one_hot(population.gain > population.cuts[candidate])
    return {
        "success": float((chosen * population.good).sum(axis=1).mean()),
        "cost": float((chosen * population.cost).sum(axis=1).mean()),
    }


def log_once(population: Population, explore: float, rng: np.random.Generator) -> tuple[Any, ...]:
    """A bootstrap sample logged under the logging policy: rows, chosen tier, propensity."""
    rows = rng.integers(0, population.gain.shape[0], population.gain.shape[0])
    preferred = (population.gain[rows] > population.cuts["logging"]).astype(np.intp)
    explored = rng.random(rows.shape[0]) < explore
    chosen = np.where(explored, 1 - preferred, preferred).astype(np.intp)
    propensity = np.where(explored, explore, 1 - explore)
    return rows, chosen, propensity


def run(population: Population, seeds: int, explore: float, level: float) -> dict[str, Any]:
    found: dict[str, dict[str, dict[str, list[tuple[float, float, float]]]]] = {}
    naive: dict[str, list[float]] = {"success": [], "cost": []}
    for seed in range(seeds):
        rows, chosen, propensity = log_once(population, explore, np.random.default_rng(seed))
        index = np.arange(rows.shape[0])
        success = population.good[rows, chosen]
        cost = population.cost[rows, chosen]
        naive["success"].append(float(success.mean()))
        naive["cost"].append(float(cost.mean()))
        for candidate in CANDIDATE_SHARES:
            target = one_hot(population.gain[rows] > population.cuts[candidate])
            stream = LoggedStream(chosen, propensity, success, target, population.predicted[rows])
            costs = stream.with_outcome(cost, np.tile(population.mean_cost, (index.shape[0], 1)))
            for quantity, logged in (("success", stream), ("cost", costs)):
                for estimator, estimate in estimate_all(logged, level).items():
                    slot = found.setdefault(candidate, {}).setdefault(quantity, {})
                    slot.setdefault(estimator.value, []).append((estimate.value, estimate.low, estimate.high))
    return summarise(population, found, naive)


def summarise(
    population: Population,
    found: dict[str, dict[str, dict[str, list[tuple[float, float, float]]]]],
    naive: dict[str, list[float]],
) -> dict[str, Any]:
    report: dict[str, Any] = {"naive_logged_mean": {q: float(np.mean(v)) for q, v in naive.items()}}
    for candidate, quantities in found.items():
        true = truth(population, candidate)
        for quantity, estimators in quantities.items():
            for estimator, values in estimators.items():
                value, low, high = (np.array(column) for column in zip(*values, strict=True))
                bias = float(value.mean() - true[quantity])
                report.setdefault(candidate, {}).setdefault(quantity, {})[estimator] = {
                    "truth": true[quantity],
                    "mean_estimate": float(value.mean()),
                    "bias": bias,
                    "bias_ratio": bias / true[quantity] if true[quantity] else None,
                    "rmse": float(np.sqrt(np.mean((value - true[quantity]) ** 2))),
                    "coverage": float(np.mean((low <= true[quantity]) & (true[quantity] <= high))),
                    "half_width": float(np.mean((high - low) / 2)),
                }
    return report


def print_table(report: dict[str, Any], seeds: int, explore: float, level: float) -> None:
    naive = report["naive_logged_mean"]
    print(f"{seeds} seeds, explore {explore:.0%}, {level:.0%} intervals")
    print(f"logging policy's own mean (naive): success {naive['success']:.4f}, cost ${naive['cost']:.6f}")
    header = f"{'candidate':<14}{'quantity':<9}{'est.':<6}{'truth':>10}{'mean est':>10}{'bias':>10}"
    print(header + f"{'bias/truth':>11}{'rmse':>10}{'coverage':>9}{'half-w':>10}")
    for candidate in CANDIDATE_SHARES:
        for quantity, estimators in report[candidate].items():
            for estimator in Estimator:
                row = estimators.get(estimator.value)
                if row is None:
                    continue
                ratio = "-" if row["bias_ratio"] is None else f"{row['bias_ratio']:+.2%}"
                print(
                    f"{candidate:<14}{quantity:<9}{estimator.value:<6}{row['truth']:>10.5f}"
                    f"{row['mean_estimate']:>10.5f}{row['bias']:>+10.5f}{ratio:>11}"
                    f"{row['rmse']:>10.5f}{row['coverage']:>9.1%}{row['half_width']:>10.5f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--explore", type=float, default=0.1)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    population = load(args.data.resolve())
    report = run(population, args.seeds, args.explore, args.level)
    report["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report, args.seeds, args.explore, args.level)
        print(f"{report['seconds']:.1f} s")


if __name__ == "__main__":
    main()
