"""The learned scorers, their calibration, and reflect's learning and guardrails, on synthetic streams."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import decide
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.learning import (
    LearningSettings,
    RoutingTarget,
    TargetKind,
    calibrate,
    first_tier,
    routed_up_count,
)
from tierflow.routing.policy import Policy
from tierflow.routing.reflect import OutcomeRow, reflect, tier_statistics, version_success
from tierflow.routing.scorers import CHEAP_FEATURES, fit_scorer, prompt_features
from tierflow.routing.states import Tier

KINDS = builtin_registry()
SUPPORT = KINDS.get("support")
PROMPT = KINDS.get("prompt")

EASY = Analysis("general", "general", 0.1, 0.0, False, 0.9, "rules")


def test_fit_scorer_learns_which_rows_are_good() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    good = x[:, 0] + 0.2 * rng.normal(size=400) > 0
    scorer = fit_scorer(x, good)
    p = scorer.probability(x)
    assert np.mean((p > 0.5) == good) > 0.9
    assert scorer.rows == 400 and scorer.width == 3
    with pytest.raises(ValueError, match="takes 3 features"):
        scorer.probability(np.zeros(4))


def test_fit_scorer_refuses_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="one label per row"):
        fit_scorer(np.zeros((3, 2)), np.array([True, False]))


def test_cheap_features_have_their_declared_width_and_see_digits() -> None:
    rows = prompt_features(["What is 12 * 34?", "hello there"], None)
    assert rows.shape == (2, len(CHEAP_FEATURES))
    digits = CHEAP_FEATURES.index("digit_share")
    assert rows[0, digits] > 0 and rows[1, digits] == 0
    assert prompt_features(["a"], np.ones((1, 4))).shape == (1, len(CHEAP_FEATURES) + 4)


def test_quality_target_routes_up_just_enough_rows() -> None:
    cheap = np.array([0.9, 0.2, 0.5, 0.8])
    best = np.array([0.9, 0.9, 0.9, 0.9])
    # by the estimates: all cheap = 2.4 of 3.6; sending the row gaining 0.7 gives 3.1, then +0.4 gives 3.5
    target = RoutingTarget(kind=TargetKind.QUALITY, value=0.95)  # goal 3.42
    assert routed_up_count(best - cheap, cheap, best, target) == 2
    threshold, share = calibrate(cheap, best, target)
    assert share == 0.5
    assert 0.1 < threshold <= 0.4


def test_cost_target_caps_the_share_routed_up() -> None:
    cheap, best = np.linspace(0, 0.9, 10), np.ones(10)
    threshold, share = calibrate(cheap, best, RoutingTarget(kind=TargetKind.COST, value=0.3))
    assert share == pytest.approx(0.3)
    assert np.sum(best - cheap >= threshold) == 3


def test_one_calibration_moves_at_most_the_step() -> None:
    cheap, best = np.zeros(100), np.linspace(0.01, 1.0, 100)
    _, share = calibrate(cheap, best, RoutingTarget(value=1.0), current_share=0.1, max_share_step=0.2)
    assert share == pytest.approx(0.3)


def test_first_tier_is_the_cheapest_no_tier_above_beats_by_the_threshold() -> None:
    probabilities = {Tier.SMALL: 0.4, Tier.MEDIUM: 0.8, Tier.LARGE: 0.85}
    assert first_tier(probabilities, 0.3) is not None
    assert first_tier(probabilities, 0.3)[0] is Tier.MEDIUM  # type: ignore[index]
    assert first_tier(probabilities, 0.5)[0] is Tier.SMALL  # type: ignore[index]
    assert first_tier({}, 0.1) is None
    # a tier where the job would almost surely fail is skipped, however close the tier above
    assert first_tier({Tier.SMALL: 0.02, Tier.LARGE: 0.05}, 0.3, 0.05)[0] is Tier.LARGE  # type: ignore[index]
    # a threshold below every gain sends the job to the top scored tier
    assert first_tier({Tier.SMALL: 0.9, Tier.LARGE: 0.85}, -0.1)[0] is Tier.LARGE  # type: ignore[index]


# --- a synthetic stream: arithmetic prompts fail on the small tier, chat prompts do not --------

ARITHMETIC = "Compute 4821 * 93 + 17 / 3 - 2210 and 77 * 1203, then 9981 - 4412 + 3 * 8."
CHAT = "Could you suggest a friendly way to greet a colleague who just joined the team?"
SMALL_GOOD = {"arithmetic": 0.1, "chat": 0.9}
LARGE_GOOD = {"arithmetic": 0.95, "chat": 0.95}


def _run_batch(policy: Policy, start: int, size: int, rng: np.random.Generator) -> list[OutcomeRow]:
    """Route `size` jobs with `policy`, reveal the outcome of each tier called, escalate failures once."""
    rows = []
    for index in range(start, start + size):
        cls = "arithmetic" if index % 2 else "chat"
        text = ARITHMETIC if cls == "arithmetic" else CHAT
        features = prompt_features([text], None)[0]
        ctx = DecisionContext(job_id=f"j{index}", prompt_features=features)
        tier = decide(PROMPT, EASY, policy, ctx).tier
        for attempt in (1, 2):
            chance = SMALL_GOOD[cls] if tier is Tier.SMALL else LARGE_GOOD[cls]
            good = bool(rng.random() < chance)
            action = "accept" if good or tier is Tier.LARGE else "escalate"
            rows.append(
                OutcomeRow(
                    f"j{index}",
                    PROMPT.name,
                    tier,
                    attempt,
                    good,
                    features,
                    None,
                    action,
                    0.0,
                    None,
                    policy.version,
                )
            )
            if action != "escalate":
                break
            tier = Tier.LARGE
    return rows


def _first_attempt_success(rows: list[OutcomeRow]) -> float:
    return float(np.mean([row.good for row in rows if row.attempt == 1]))


def test_learner_improves_on_a_stream_where_one_class_fails_on_small() -> None:
    rng = np.random.default_rng(7)
    # Escalations alone reveal large here; exploration has its own tests (test_exploration.py).
    learning = LearningSettings(
        min_samples=30,
        min_version_samples=20,
        max_share_step=0.5,
        target=RoutingTarget(value=0.9),
        explore_share=0,
    )
    policy = Policy(learning=learning)
    rows = _run_batch(policy, 0, 120, rng)
    before = _first_attempt_success(rows)
    assert {row.tier for row in rows if row.attempt == 1} == {Tier.SMALL}  # the rules start all on small
    for batch in range(1, 4):
        reflection = reflect(policy, policy.version - 1 or None, rows, None)
        assert reflection.rollback_to is None
        if reflection.policy is not None:
            policy = reflection.policy.model_copy(update={"version": policy.version + 1})
        rows += _run_batch(policy, batch * 120, 120, rng)
    latest = [row for row in rows if row.policy_version == policy.version]
    assert "prompt" in policy.learned
    assert _first_attempt_success(latest) > before + 0.25
    first = {row.job_id: row.tier for row in latest if row.attempt == 1}
    arithmetic_large = np.mean([first[f"j{i}"] is Tier.LARGE for i in range(360, 480) if i % 2])
    chat_small = np.mean([first[f"j{i}"] is Tier.SMALL for i in range(360, 480) if not i % 2])
    assert arithmetic_large > 0.9 and chat_small > 0.9  # better and still cheap where small suffices


def _row(job: int, version: int, good: bool, kind: str = "prompt") -> OutcomeRow:
    return OutcomeRow(f"j{job}", kind, Tier.SMALL, 1, good, np.zeros(2), None, "accept", 0.0, None, version)


def _jobs(first: int, version: int, jobs: int, good: int, kind: str = "prompt") -> list[OutcomeRow]:
    """`jobs` jobs decided by `version`, the first `good` of them good."""
    return [_row(first + i, version, i < good, kind) for i in range(jobs)]


def test_a_version_that_succeeds_less_than_its_parent_is_rolled_back() -> None:
    policy = Policy(version=2, learning=LearningSettings(min_version_samples=20, rollback_tolerance=0.05))
    rows = [_row(i, 1, i % 10 != 0) for i in range(40)] + [_row(100 + i, 2, i % 2 == 0) for i in range(40)]
    assert version_success(rows, 1) == (40, 0.9)
    reflection = reflect(policy, 1, rows, None)
    assert reflection.rollback_to == 1 and reflection.policy is None
    assert "rolling back to version 1" in reflection.text
    assert reflection.statistics["parent"] == {"version": 1, "jobs": 40, "success_rate": 0.9}


def test_a_drop_within_tolerance_or_on_too_few_jobs_is_not_rolled_back() -> None:
    policy = Policy(version=2, learning=LearningSettings(min_version_samples=20, rollback_tolerance=0.05))
    close = [_row(i, 1, i % 10 != 0) for i in range(40)] + [_row(100 + i, 2, i % 8 != 0) for i in range(40)]
    assert reflect(policy, 1, close, None).rollback_to is None
    few = [_row(i, 1, True) for i in range(40)] + [_row(100 + i, 2, False) for i in range(10)]
    assert reflect(policy, 1, few, None).rollback_to is None


def test_a_drop_that_chance_explains_is_not_rolled_back() -> None:
    policy = Policy(version=2, learning=LearningSettings(min_version_samples=20, rollback_tolerance=0.05))
    # 70% against 63%: beyond the tolerance, but on 100 jobs each within one standard error
    noisy = _jobs(0, 1, 100, 70) + _jobs(1000, 2, 100, 63)
    reflection = reflect(policy, 1, noisy, None)
    assert reflection.rollback_to is None
    assert reflection.statistics["comparison"]["drop"] == 0.07
    assert 0.06 < reflection.statistics["comparison"]["standard_error"] < 0.07
    # the same rates on ten times the jobs are no longer chance
    many = _jobs(0, 1, 1000, 700) + _jobs(10_000, 2, 1000, 630)
    rolled = reflect(policy, 1, many, None)
    assert rolled.rollback_to == 1 and "drop of 7.0%" in rolled.text


def test_a_version_that_sees_more_of_a_harder_class_is_not_blamed_for_it() -> None:
    policy = Policy(version=2, learning=LearningSettings(min_version_samples=20, rollback_tolerance=0.05))
    support, prompt = "support", "prompt"
    # per class the same rates (support 90%, prompt 50%); overall 70% against 54%
    parent = _jobs(0, 1, 200, 180, support) + _jobs(1000, 1, 200, 100, prompt)
    version = _jobs(2000, 2, 40, 36, support) + _jobs(3000, 2, 360, 180, prompt)
    assert version_success(parent, 1) == (400, 0.7) and version_success(version, 2) == (400, 0.54)
    reflection = reflect(policy, 1, parent + version, None)
    assert reflection.rollback_to is None and reflection.statistics["comparison"]["drop"] == 0.0
    # and a class only one of them decided is left out of the comparison
    worse = parent + _jobs(2000, 2, 40, 36, support) + _jobs(3000, 2, 360, 100, "document")
    assert reflect(policy, 1, worse, None).rollback_to is None


def test_too_few_rows_change_nothing_and_say_why() -> None:
    policy = Policy(learning=LearningSettings(min_samples=50))
    reflection = reflect(policy, None, [_row(i, 1, True) for i in range(10)], None)
    assert reflection.policy is None and reflection.rollback_to is None
    assert "prompt: 10 judged attempts, fewer than 50" in reflection.text


def test_statistics_per_class_and_tier() -> None:
    rows = [_row(i, 1, i < 3) for i in range(4)]
    stats = tier_statistics(rows)
    assert stats["prompt"]["small"]["rows"] == 4
    assert stats["prompt"]["small"]["success_rate"] == 0.75
    assert stats["prompt"]["small"]["escalation_rate"] == 0.0


def test_a_scorer_survives_the_policy_store_round_trip() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4)) * [1.0, 10.0, 0.1, 1.0] + [0.0, 5.0, -1.0, 0.0]
    scorer = fit_scorer(x, x[:, 0] > 0)
    policy = Policy(learned={"prompt": {"encoder": None, "tiers": {"small": scorer}, "gain_threshold": 0.2}})
    stored = Policy.model_validate_json(policy.model_dump_json())
    again = stored.learned["prompt"].tiers[Tier.SMALL]
    assert again == scorer and stored == policy
    assert np.allclose(again.probability(x), scorer.probability(x))
    z = (x - np.array(scorer.mean)) / np.array(scorer.scale)  # the stored numbers mean what they say
    expected = 1 / (1 + np.exp(-(z @ np.array(scorer.weights) + scorer.bias)))
    assert np.allclose(scorer.probability(x), expected)
