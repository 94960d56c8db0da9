"""Reflect's proposal of a strategy search's order from its judged steps."""

from __future__ import annotations

from tierflow.routing.learning import LearningSettings
from tierflow.routing.policy import Policy
from tierflow.routing.reflect import reflect
from tierflow.routing.search_learning import (
    StepOutcome,
    candidate_orders,
    learn_orders,
    order_value,
    step_rates,
)
from tierflow.routing.search_plan import SearchPlan

PLAN = SearchPlan(order=("direct", "retrieval", "review"))


def _steps(key: str, step: str, n: int, good_share: float, cost: float) -> list[StepOutcome]:
    good = round(n * good_share)
    return [StepOutcome(key, step, i < good, cost) for i in range(n)]


def test_an_order_is_worth_its_chance_of_a_good_answer_and_the_cost_of_getting_there():
    rates = step_rates(_steps("k", "direct", 10, 0.2, 1.0) + _steps("k", "retrieval", 10, 0.8, 2.0))
    success, cost = order_value(("direct", "retrieval", "review"), rates)
    assert round(success, 6) == round(0.2 + 0.8 * 0.8, 6) and round(cost, 6) == round(1.0 + 0.8 * 2.0, 6)
    assert candidate_orders(("direct", "retrieval", "verify@large", "review")) == [
        ("direct", "retrieval", "verify@large", "review"),
        ("retrieval", "direct", "verify@large", "review"),
        ("verify@large", "direct", "retrieval", "review"),
    ]


def test_a_first_step_that_rarely_answers_well_gives_way_to_the_one_that_does():
    steps = _steps("support", "direct", 60, 0.1, 0.001) + _steps("support", "retrieval", 60, 0.85, 0.0012)
    learned, notes = learn_orders({"support": PLAN}, steps, min_samples=50)
    assert learned["support"].order == ("retrieval", "direct", "review")
    assert learned["support"].max_steps == PLAN.max_steps
    assert "retrieval -> direct -> review instead of direct -> retrieval -> review" in notes[0]


def test_an_order_stays_while_a_step_has_too_few_outcomes_or_when_it_already_pays_best():
    few = _steps("support", "direct", 60, 0.1, 0.001) + _steps("support", "retrieval", 10, 0.9, 0.001)
    learned, notes = learn_orders({"support": PLAN}, few, min_samples=50)
    assert (
        learned["support"] == PLAN and "too few judged steps to reorder (retrieval 10; 50 each)" in notes[0]
    )
    good_first = _steps("support", "direct", 60, 0.8, 0.001) + _steps("support", "retrieval", 60, 0.9, 0.003)
    learned, notes = learn_orders({"support": PLAN}, good_first, min_samples=50)
    assert learned["support"] == PLAN and "stays the cheapest" in notes[0]


def test_a_cheaper_order_that_answers_fewer_jobs_well_within_its_steps_is_not_taken():
    # one model step only: direct first is cheaper per good answer, but answers 30% well, not 90%
    plan = SearchPlan(order=("verify", "direct", "review"), max_steps=1)
    steps = _steps("k", "verify", 60, 0.9, 0.01) + _steps("k", "direct", 60, 0.3, 0.0001)
    learned, notes = learn_orders({"k": plan}, steps, min_samples=50)
    assert learned["k"] == plan and "stays" in notes[0]
    unbounded = plan.model_copy(update={"max_steps": 4})
    learned, _ = learn_orders({"k": unbounded}, steps, min_samples=50)
    assert learned["k"].order == ("direct", "verify", "review"), (
        "with both steps run, the cheap one goes first"
    )


def test_reflect_publishes_a_reordered_search_with_the_tiers_learning_unchanged():
    policy = Policy(search={"support/refund": PLAN}, learning=LearningSettings(min_samples=50))
    steps = _steps("support/refund", "direct", 60, 0.05, 0.001) + _steps(
        "support/refund", "retrieval", 60, 0.9, 0.001
    )
    reflection = reflect(policy, None, [], None, ["support"], steps)
    assert reflection.policy is not None
    assert reflection.policy.search["support/refund"].order == ("retrieval", "direct", "review")
    assert reflection.policy.learned == policy.learned
    assert "Search support/refund" in reflection.text
    assert reflect(policy, None, [], None, ["support"], ()).policy is None, "no steps: nothing to publish"
