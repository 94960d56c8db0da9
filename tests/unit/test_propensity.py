"""Every first decision records the propensity of the tier it chose: what off-policy evaluation needs."""

from __future__ import annotations

import numpy as np

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import Decision, decide, first_tier_choices
from tierflow.routing.kinds.registry import recorded_prompt_kind
from tierflow.routing.learning import LearnedRouting, LearningSettings
from tierflow.routing.policy import Policy
from tierflow.routing.scorers import constant_scorer
from tierflow.routing.states import Tier

PROMPT = recorded_prompt_kind()
EASY = Analysis("general", "general", 0.1, 0.0, False, 0.9, "rules")
FEATURES = np.zeros(3)
IDS = [f"job-{i}" for i in range(400)]


def _learned(explore_share: float, **fields: object) -> Policy:
    """small P(good) 0.3, large 0.9: the scorers start every job on large; exploration goes down."""
    tiers = {Tier.SMALL: constant_scorer(3, 299, 998), Tier.LARGE: constant_scorer(3, 899, 998)}
    learned = LearnedRouting(encoder=None, tiers=tiers, gain_threshold=0.2)
    learning = LearningSettings(explore_share=explore_share)
    return Policy.model_validate({"learned": {PROMPT.name: learned}, "learning": learning, **fields})


def _decide(policy: Policy, job_id: str, analysis: Analysis = EASY, floor: Tier | None = None) -> Decision:
    ctx = DecisionContext(job_id=job_id, prompt_features=FEATURES)
    return decide(PROMPT, analysis, policy, ctx, floor)


def test_an_explored_job_records_the_share_and_the_others_the_rest() -> None:
    policy = _learned(0.2)
    decisions = [_decide(policy, job) for job in IDS]
    explored = [d for d in decisions if d.tier is Tier.SMALL]
    kept = [d for d in decisions if d.tier is Tier.LARGE]
    assert explored and kept
    assert {d.propensity for d in explored} == {0.2}
    assert {d.propensity for d in kept} == {0.8}
    assert decisions[0].as_dict()["propensity"] in {0.2, 0.8}


def test_the_choices_are_the_same_for_every_job_of_a_class_whatever_its_id() -> None:
    policy = _learned(0.2)
    ctx = DecisionContext(job_id="any", prompt_features=FEATURES)
    assert first_tier_choices(PROMPT, EASY, policy, ctx) == {Tier.LARGE: 0.8, Tier.SMALL: 0.2}
    no_id = DecisionContext(job_id="", prompt_features=FEATURES)
    assert first_tier_choices(PROMPT, EASY, policy, no_id) == {Tier.LARGE: 1.0}


def test_without_exploration_a_first_decision_is_certain() -> None:
    policy = _learned(0.0)
    assert {_decide(policy, job).propensity for job in IDS[:50]} == {1.0}
    rules = Policy.model_validate({"learning": LearningSettings(explore_share=0.0)})
    assert _decide(rules, "job-1").propensity == 1.0


def test_a_rules_policy_exploring_up_records_the_share_on_the_top_tier() -> None:
    rules = Policy.model_validate({"learning": LearningSettings(explore_share=0.1)})
    decisions = [_decide(rules, job) for job in IDS]
    up = [d for d in decisions if d.tier is Tier.LARGE]
    assert up and {d.propensity for d in up} == {0.1}
    assert {d.propensity for d in decisions if d.tier is Tier.SMALL} == {0.9}


def test_escalations_and_a_failed_analysis_record_what_is_known() -> None:
    policy = _learned(0.2)
    assert _decide(policy, "job-1", floor=Tier.LARGE).propensity is None  # a later attempt
    failed = Analysis("general", "general", 0.1, 0.0, False, 0.9, "rules", (), stronger=True)
    rules = Policy.model_validate({"learning": LearningSettings(explore_share=0.2)})
    decision = _decide(rules, "job-1", failed)
    assert decision.tier is Tier.MEDIUM and decision.propensity == 1.0  # one tier up, never explores


def test_a_cap_that_moves_the_job_leaves_the_propensity_unknown() -> None:
    capped = _learned(0.0, max_tier={"prompt": "small"})
    decision = _decide(capped, "job-1")
    assert decision.tier is Tier.SMALL and decision.propensity is None
