"""Exploration: a bounded, per-job share of learned decisions starts on the cheapest scored tier."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from routing.analysis import Analysis
from routing.constraints import DecisionContext
from routing.decision import Decision, Strategy, decide
from routing.experiments import Experiment
from routing.jobs import JobKind
from routing.learning import LearnedRouting, LearningSettings, RoutingTarget
from routing.online import OnlineRun, StreamedPrompt, stream_prompts
from routing.policy import Policy
from routing.scorers import constant_scorer
from routing.states import Tier

EASY = Analysis("general", "general", 0.1, 0.0, False, 0.9, "rules")
FEATURES = np.zeros(3)
IDS = [f"job-{i}" for i in range(2000)]


def _policy(small_good: float, explore_share: float, large_good: float = 0.9, **fields: object) -> Policy:
    """Constant scorers (P(good) `small_good` and `large_good`); start above small for a gain >= 0.2."""
    tiers = {
        Tier.SMALL: constant_scorer(3, round(small_good * 1000) - 1, 998),  # (good + 1) / (rows + 2)
        Tier.LARGE: constant_scorer(3, round(large_good * 1000) - 1, 998),
    }
    learned = LearnedRouting(encoder=None, tiers=tiers, gain_threshold=0.2)
    learning = fields.pop("learning", LearningSettings(explore_share=explore_share))
    return Policy.model_validate({"learned": {JobKind.PROMPT: learned}, "learning": learning, **fields})


def _decide(policy: Policy, job_id: str, analysis: Analysis = EASY, floor: Tier | None = None) -> Decision:
    ctx = DecisionContext(job_id=job_id, prompt_features=FEATURES)
    return decide(JobKind.PROMPT, analysis, policy, ctx, floor)


def _explored(decision: Decision) -> bool:
    return any(reason.startswith("exploring:") for reason in decision.reasons)


def _within_binomial(count: int, n: int, share: float) -> bool:
    return abs(count - n * share) <= 4 * math.sqrt(n * share * (1 - share))


def test_the_share_of_jobs_that_explore_is_the_setting() -> None:
    for share in (0.05, 0.2):
        decisions = [_decide(_policy(0.3, share), job) for job in IDS]
        small = [d for d in decisions if d.tier is Tier.SMALL]
        assert _within_binomial(len(small), len(IDS), share), (share, len(small))
        assert all(_explored(d) for d in small)
        assert all(not _explored(d) and d.tier is Tier.LARGE for d in decisions if d.tier is not Tier.SMALL)


def test_exploring_says_so_and_keeps_the_learned_reason() -> None:
    policy = _policy(0.3, 0.2)
    explored = next(d for d in (_decide(policy, job) for job in IDS) if d.tier is Tier.SMALL)
    assert explored.reasons[0].startswith("learned P(good): small 0.30, large 0.90")
    assert explored.reasons[1] == (
        "exploring: started on small instead of large so its outcome is observed (explore_share 20%)"
    )


def test_a_job_decides_the_same_every_time() -> None:
    first = [_decide(_policy(0.3, 0.2), job).tier for job in IDS[:300]]
    again = [_decide(_policy(0.3, 0.2), job).tier for job in reversed(IDS[:300])]
    assert first == list(reversed(again))
    assert Tier.SMALL in first and Tier.LARGE in first
    # a larger share keeps every job that explored at the smaller one
    wider = [_decide(_policy(0.3, 0.4), job).tier for job in IDS[:300]]
    assert all(w is Tier.SMALL for f, w in zip(first, wider, strict=True) if f is Tier.SMALL)


def test_exploration_is_independent_of_experiment_arms() -> None:
    split = Experiment(name="half", share=0.5)
    policy = _policy(0.3, 0.2, experiments=(split,))
    decisions = [_decide(policy, job) for job in IDS]
    for arm in ("half:treatment", "half:control"):
        mine = [d for d in decisions if d.arm == arm]
        explored = sum(d.tier is Tier.SMALL for d in mine)
        assert _within_binomial(explored, len(mine), 0.2), (arm, explored, len(mine))


def test_a_zero_share_never_explores() -> None:
    assert all(_decide(_policy(0.3, 0.0), job).tier is Tier.LARGE for job in IDS)


def test_escalations_never_explore() -> None:
    policy = _policy(0.3, 0.5)
    explorers = [job for job in IDS[:100] if _decide(policy, job).tier is Tier.SMALL]
    assert explorers
    for job in explorers:
        again = _decide(policy, job, floor=Tier.MEDIUM)
        assert again.tier is Tier.MEDIUM and not _explored(again)


def test_a_job_the_scorers_start_on_the_cheapest_tier_is_unaffected() -> None:
    decisions = [_decide(_policy(0.8, 0.5), job) for job in IDS]
    assert all(d.tier is Tier.SMALL for d in decisions)
    assert not any(_explored(d) for d in decisions)
    assert all(d.reasons[1] == "learned scorer starts the job on small" for d in decisions)


def test_exploration_overrides_the_start_floor() -> None:
    # small 0.3 is close enough to large 0.4, but under the floor of 0.5: the scorers pick large
    def floored(share: float) -> Policy:
        return _policy(
            0.3, share, 0.4, learning=LearningSettings(explore_share=share, min_start_probability=0.5)
        )

    assert all(_decide(floored(0.0), job).tier is Tier.LARGE for job in IDS[:100])
    explored = [_decide(floored(0.5), job) for job in IDS[:100]]
    # explored all the same: the share bounds the cost, and it is how a wrong floor is found
    assert 20 < sum(d.tier is Tier.SMALL for d in explored) < 80
    assert all(_explored(d) for d in explored if d.tier is Tier.SMALL)


def test_exploration_yields_to_review_a_failed_analysis_a_missing_id_and_the_constraints() -> None:
    policy = _policy(0.3, 0.5, tier_models=FAKE_TIERS)
    job = next(job for job in IDS if _decide(policy, job).tier is Tier.SMALL)
    reviewing = policy.model_copy(update={"review_high_risk": True})
    assert _decide(reviewing, job, replace(EASY, risk=0.9)).strategy is Strategy.REVIEW
    failed = _decide(policy, job, replace(EASY, stronger=True))  # starts one tier up, unexplored
    assert failed.tier is Tier.LARGE and not _explored(failed)
    assert not any(_explored(_decide(policy, "")) for _ in range(3))  # no id: nothing tells jobs apart
    broken = DecisionContext(job_id=job, prompt_features=FEATURES, unavailable=frozenset({"fake:fake-small"}))
    moved = decide(JobKind.PROMPT, EASY, policy, broken)
    assert moved.tier is Tier.MEDIUM and "small has no usable model" in moved.reasons
    assert _explored(moved)


FAKE_TIERS = {
    Tier.SMALL: ("fake:fake-small",),
    Tier.MEDIUM: ("fake:fake-medium",),
    Tier.LARGE: ("fake:fake-large",),
}


# --- a stream where the first fit is wrong about a class: only exploration finds it out --------


def _stream(n: int, seed: int, b_small_good: float) -> list[StreamedPrompt]:
    """Two classes told apart by the one feature: small is right on 90% of class a and on
    `b_small_good` of class b; large on 95% of both."""
    rng = np.random.default_rng(seed)
    prompts = []
    for index in range(n):
        b = index % 2
        small = bool(rng.random() < (b_small_good if b else 0.9))
        prompts.append(
            StreamedPrompt(np.array([float(b)]), None, small, bool(rng.random() < 0.95), 0.001, 0.03)
        )
    return prompts


def test_exploration_lets_reflect_find_that_small_is_good_for_a_class_it_routed_away() -> None:
    # recorded when small failed class b; by the time of the stream, small gets it right
    train, stream = _stream(40, 1, b_small_good=0.1), _stream(2000, 2, b_small_good=0.95)

    def run(share: float, prompts: list[StreamedPrompt]) -> OnlineRun:
        learning = LearningSettings(
            target=RoutingTarget(value=0.8),
            min_samples=20,
            min_version_samples=20,
            max_share_step=0.5,
            explore_share=share,
        )
        return stream_prompts(train, prompts, learning, reflect_every=100)

    blind, blind_head = run(0.0, stream), run(0.0, stream[:1000])
    # every class b prompt starts on large, so small's outcome on it is never seen and never learned
    assert blind.large_share == blind_head.large_share == 0.5
    exploring, exploring_head = run(0.05, stream), run(0.05, stream[:1000])
    # the second half of the stream: class b is back on small, beyond what exploring alone moves
    tail = (exploring.large_calls - exploring_head.large_calls) / 1000
    assert tail < 0.2, tail
    assert exploring.cost_usd < 0.7 * blind.cost_usd
    assert exploring.accuracy >= blind.accuracy - 0.01  # as good: small is as right as large on b
