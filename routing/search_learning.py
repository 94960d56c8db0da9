"""Which first strategy pays off: reflect's proposal of a better order for each strategy search.

Each judged search step says which plan (`Policy.search` key) it belonged to, which step
of the order it ran, whether its answer was good and what it cost. Per step of a plan's
order this gives the share of good answers and the mean cost of the jobs that reached it.
An order is then worth, per job, the chance that some model step answers well, and the
expected cost of getting there (each step paid by the jobs the steps before it left
unsure). Reflect proposes the order, among those that try one step first and the others
in their present order, with the lowest expected cost per good answer, when it beats the
present order by `MIN_GAIN` without answering fewer jobs well.

The rates of later steps are measured on the jobs the earlier steps left unsure, the
harder ones: moved first, a step meets easier jobs, so its estimate there is, if anything,
too low. A step no job has reached yet cannot be judged: until every model step of an
order has `min_samples` outcomes, the order stays. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tierflow.routing.search_plan import ENDING_STRATEGIES, SearchPlan

MIN_GAIN = 0.1  # a new order must cost at least this share less per good answer
SUCCESS_SLACK = 0.01  # ... and answer no fewer jobs well than this below the present order


@dataclass(frozen=True)
class StepOutcome:
    """One judged step of a strategy search."""

    key: str  # the Policy.search key of its plan
    step: str  # the order's entry it ran ("retrieval", "verify@large")
    good: bool
    cost_usd: float


@dataclass(frozen=True)
class StepRate:
    n: int
    good: float  # share of good answers among the jobs that reached the step
    cost_usd: float  # mean cost of the step


def step_rates(outcomes: Sequence[StepOutcome]) -> dict[str, StepRate]:
    rates: dict[str, StepRate] = {}
    for step in sorted({o.step for o in outcomes}):
        mine = [o for o in outcomes if o.step == step]
        rates[step] = StepRate(
            len(mine), sum(o.good for o in mine) / len(mine), sum(o.cost_usd for o in mine) / len(mine)
        )
    return rates


def order_value(order: Sequence[str], rates: dict[str, StepRate], max_steps: int = 16) -> tuple[float, float]:
    """(the share of jobs some model step answers well, the expected cost per job) of an order
    whose search stops after `max_steps` model steps. Every order of the same steps answers
    the same share when all of them run; a bound that cuts the order short is what an order's
    first steps change."""
    reach, cost, success = 1.0, 0.0, 0.0
    for entry in order[:max_steps]:
        if entry.partition("@")[0] in ENDING_STRATEGIES:
            break
        rate = rates[entry]
        cost += reach * rate.cost_usd
        success += reach * rate.good
        reach *= 1.0 - rate.good
    return success, cost


def _per_good(value: tuple[float, float]) -> float:
    success, cost = value
    return cost / success if success > 0 else float("inf")


def candidate_orders(order: Sequence[str]) -> list[tuple[str, ...]]:
    """The present order with one of its model steps moved first (the ending step stays last)."""
    model = [entry for entry in order if entry.partition("@")[0] not in ENDING_STRATEGIES]
    ending = [entry for entry in order if entry not in model]
    found = []
    for first in model:
        moved = (first, *(entry for entry in model if entry != first), *ending)
        if moved not in found:
            found.append(moved)
    return found


def learn_orders(
    search: dict[str, SearchPlan], outcomes: Sequence[StepOutcome], min_samples: int
) -> tuple[dict[str, SearchPlan], list[str]]:
    """Every plan of `search`, reordered where the outcomes show a cheaper first step, and a note
    per plan saying what was seen."""
    learned: dict[str, SearchPlan] = {}
    notes = []
    for key, plan in search.items():
        learned[key] = plan
        rates = step_rates([o for o in outcomes if o.key == key])
        model = [e for e in plan.order if e.partition("@")[0] not in ENDING_STRATEGIES]
        short = [e for e in model if rates.get(e, StepRate(0, 0.0, 0.0)).n < min_samples]
        if short:
            seen = ", ".join(f"{e} {rates[e].n if e in rates else 0}" for e in short)
            notes.append(f"Search {key}: too few judged steps to reorder ({seen}; {min_samples} each).")
            continue
        present = order_value(plan.order, rates, plan.max_steps)
        best, best_value = tuple(plan.order), present
        for order in candidate_orders(plan.order):
            value = order_value(order, rates, plan.max_steps)
            if value[0] >= present[0] - SUCCESS_SLACK and _per_good(value) < _per_good(best_value):
                best, best_value = order, value
        gain = 1.0 - _per_good(best_value) / _per_good(present) if _per_good(present) > 0 else 0.0
        if best != tuple(plan.order) and gain >= MIN_GAIN:
            learned[key] = plan.model_copy(update={"order": best})
            notes.append(
                f"Search {key}: {' -> '.join(best)} instead of {' -> '.join(plan.order)}: "
                f"{best_value[0]:.0%} answered well at ${_per_good(best_value):.6f} per good answer, "
                f"against {present[0]:.0%} at ${_per_good(present):.6f}."
            )
        else:
            notes.append(f"Search {key}: {' -> '.join(plan.order)} stays the cheapest order per good answer.")
    return learned, notes
