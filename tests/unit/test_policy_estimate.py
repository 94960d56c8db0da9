"""routing.policy_estimate: logged jobs from the learner's rows, a policy's estimate, reflect's gate."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.analysis import Analysis
from tierflow.routing.learning import LearningSettings
from tierflow.routing.ope import Estimator
from tierflow.routing.policy import Policy
from tierflow.routing.policy_estimate import FirstDecision, estimate_policy, logged_jobs, publish_check
from tierflow.routing.reflect import OutcomeRow
from tierflow.routing.states import Tier

EASY = Analysis("general", "general", 0.1, 0.0, False, 0.9, "rules")


def _row(job: str, attempt: int, tier: Tier, good: bool, cost: float) -> OutcomeRow:
    return OutcomeRow(job, "prompt", tier, attempt, good, np.zeros(3), None, "accept", cost)


def test_a_job_is_its_first_tier_with_its_last_outcome_and_all_its_cost() -> None:
    rows = [
        _row("a", 1, Tier.SMALL, False, 0.001),
        _row("a", 2, Tier.LARGE, True, 0.01),
        _row("b", 1, Tier.SMALL, True, 0.001),
        _row("c", 1, Tier.LARGE, True, 0.01),
        _row("d", 2, Tier.LARGE, True, 0.01),  # its first attempt fell out of the window: not a job here
    ]
    firsts = {
        "a": FirstDecision(0.9, EASY.as_dict()),
        "b": FirstDecision(None, EASY.as_dict()),  # logged before propensities were
        "c": FirstDecision(0.1, EASY.as_dict()),
    }
    jobs, missing = logged_jobs(rows, firsts)
    assert missing == 1
    assert [(j.job_id, j.tier, j.propensity, j.success) for j in jobs] == [
        ("a", Tier.SMALL, 0.9, 1.0),
        ("c", Tier.LARGE, 0.1, 1.0),
    ]
    assert jobs[0].cost_usd == pytest.approx(0.011)


def test_the_logging_policy_estimates_itself_as_observed_and_another_by_its_weights() -> None:
    # The rules start every job on small and explore up to large with 10%: a job logged on
    # small has propensity 0.9, on large 0.1. Small is right on a, b; large on all four.
    rules = Policy.model_validate({"learning": LearningSettings(explore_share=0.1)})
    rows = [
        _row("a", 1, Tier.SMALL, True, 0.001),
        _row("b", 1, Tier.SMALL, True, 0.001),
        _row("c", 1, Tier.SMALL, False, 0.001),
        _row("d", 1, Tier.LARGE, True, 0.01),
    ]
    firsts = {job: FirstDecision(0.1 if job == "d" else 0.9, EASY.as_dict()) for job in "abcd"}
    jobs, _ = logged_jobs(rows, firsts)
    itself = estimate_policy(rules, jobs)
    # its own choices: 0.9 on small, 0.1 on large for every job -> every weight is 1
    assert itself.success[Estimator.IPS].value == pytest.approx(0.75)
    assert itself.shares["small"] == pytest.approx(0.9) and itself.shares["large"] == pytest.approx(0.1)
    assert itself.logged["success"] == pytest.approx(0.75) and itself.unsupported == 0
    # Without exploration the rules put everything on small: weights 1 / 0.9 on a, b, c, 0 on d.
    certain = Policy.model_validate({"learning": LearningSettings(explore_share=0.0)})
    small_only = estimate_policy(certain, jobs)
    assert small_only.success[Estimator.IPS].value == pytest.approx((2 / 0.9) / 4)
    assert small_only.success[Estimator.SNIPS].value == pytest.approx(2 / 3)
    assert small_only.cost[Estimator.IPS].value == pytest.approx((3 * 0.001 / 0.9) / 4)


def test_the_gate_refuses_a_lower_bound_beyond_the_tolerance_and_waits_for_enough_rows() -> None:
    rules = Policy.model_validate({"learning": LearningSettings(explore_share=0.1)})
    rows = [_row(f"j{i}", 1, Tier.SMALL if i % 10 else Tier.LARGE, i % 3 > 0, 0.001) for i in range(60)]
    firsts = {f"j{i}": FirstDecision(0.9 if i % 10 else 0.1, EASY.as_dict()) for i in range(60)}
    jobs, _ = logged_jobs(rows, firsts)
    estimate = estimate_policy(rules, jobs)
    same = publish_check(estimate, estimate, 0.0, 20)  # identical: a change of exactly 0
    assert same.passed is True and "within the tolerance of 0%" in same.text
    assert same.statistics["change"]["low"] == 0.0
    # Without exploration the rules keep the 1 in 10 jobs logged on large (2 in 3 right) on
    # small (2 in 3 right as well on the other jobs): no change, but only the weighted rows
    # speak for it, so the interval is wide; a tolerance of 0 refuses it, 50% does not.
    certain = estimate_policy(Policy.model_validate({"learning": LearningSettings(explore_share=0.0)}), jobs)
    strict = publish_check(certain, estimate, 0.0, 20)
    assert strict.passed is False and strict.text.endswith("not published")
    assert strict.statistics["change"]["low"] < 0 < strict.statistics["change"]["high"]
    assert publish_check(certain, estimate, 0.5, 20).passed is True
    few = publish_check(estimate, estimate, 0.05, 100)
    assert few.passed is None and "not estimated" in few.text


def test_a_candidate_that_moves_jobs_where_nothing_was_explored_is_not_judged() -> None:
    # Logged without exploration: every job on small for certain. A candidate that explores up
    # puts 10% of every job on large, where no logged job could have started.
    rows = [_row(f"j{i}", 1, Tier.SMALL, i % 2 == 0, 0.001) for i in range(40)]
    jobs, _ = logged_jobs(rows, {f"j{i}": FirstDecision(1.0, EASY.as_dict()) for i in range(40)})
    logging = estimate_policy(Policy.model_validate({"learning": LearningSettings(explore_share=0.0)}), jobs)
    exploring = estimate_policy(
        Policy.model_validate({"learning": LearningSettings(explore_share=0.1)}), jobs
    )
    assert (logging.unsupported, exploring.unsupported) == (0, 40)
    check = publish_check(exploring, logging, 0.05, 20)
    assert check.passed is None and "could not have chosen" in check.text
