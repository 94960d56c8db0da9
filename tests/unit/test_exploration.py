"""Exploration: a bounded, per-job share of first attempts starts where outcomes are missing: on the
top tier while it has no learned scorer (up), else on the cheapest scored tier (down)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import Decision, Strategy, decide
from tierflow.routing.experiments import Experiment
from tierflow.routing.kinds.registry import builtin_registry
from tierflow.routing.learning import LearnedRouting, LearningSettings, RoutingTarget
from tierflow.routing.online import OnlineRun, StreamedPrompt, recorded_policy, stream_prompts
from tierflow.routing.policy import Policy
from tierflow.routing.scorers import constant_scorer
from tierflow.routing.states import Tier

KINDS = builtin_registry()
DOCUMENT = KINDS.get("document")
PROMPT = KINDS.get("prompt")

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
    return Policy.model_validate({"learned": {"prompt": learned}, "learning": learning, **fields})


def _decide(policy: Policy, job_id: str, analysis: Analysis = EASY, floor: Tier | None = None) -> Decision:
    ctx = DecisionContext(job_id=job_id, prompt_features=FEATURES)
    return decide(PROMPT, analysis, policy, ctx, floor)


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
    moved = decide(PROMPT, EASY, policy, broken)
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


# --- upward: while the top tier has no learned scorer, a share of first attempts starts on it ----

UP = "exploring: started on large, which has too few judged outcomes of prompt jobs to learn from"


def _rules_only(explore_share: float, **fields: object) -> Policy:
    """No learned routing: the rules start EASY jobs on small."""
    return Policy.model_validate({"learning": LearningSettings(explore_share=explore_share), **fields})


def test_without_learned_routing_the_share_of_jobs_on_the_top_tier_is_the_setting() -> None:
    rules = "difficulty 0.10 maps to small"
    for share in (0.05, 0.2):
        decisions = [_decide(_rules_only(share), job) for job in IDS]
        large = [d for d in decisions if d.tier is Tier.LARGE]
        assert _within_binomial(len(large), len(IDS), share), (share, len(large))
        # the ladder's top, not the next tier up: the tier reflect compares the others with
        assert not any(d.tier is Tier.MEDIUM for d in decisions)
        assert all(d.reasons == (rules, f"{UP} (explore_share {share * 100:g}%)") for d in large)
        assert all(d.reasons == (rules,) for d in decisions if d.tier is Tier.SMALL)


def test_a_job_explores_up_the_same_every_time_and_as_it_would_explore_down() -> None:
    first = [_decide(_rules_only(0.2), job).tier for job in IDS[:300]]
    again = [_decide(_rules_only(0.2), job).tier for job in reversed(IDS[:300])]
    assert first == list(reversed(again))
    assert Tier.SMALL in first and Tier.LARGE in first
    down = [_decide(_policy(0.3, 0.2), job).tier for job in IDS[:300]]  # one hash, both directions
    assert [t is Tier.LARGE for t in first] == [t is Tier.SMALL for t in down]


def _without_top(policy: Policy) -> Policy:
    """`policy` whose learned routing of prompts has lost its scorer for large."""
    learned = policy.learned["prompt"]
    tiers = {tier: scorer for tier, scorer in learned.tiers.items() if tier is not Tier.LARGE}
    return policy.model_copy(update={"learned": {"prompt": learned.model_copy(update={"tiers": tiers})}})


def test_a_zero_share_changes_no_decision() -> None:
    for policy in (_rules_only(0.0), _policy(0.3, 0.0), _without_top(_policy(0.3, 0.0))):
        for job in IDS[:300]:
            # the id is all exploration reads, and a job without one never explores
            decision = _decide(policy, job)
            assert decision == _decide(policy, "") and not _explored(decision)


def test_escalations_a_missing_id_answered_rules_and_a_failed_analysis_never_explore_up() -> None:
    policy = _rules_only(0.5)
    explorers = [job for job in IDS[:100] if _decide(policy, job).tier is Tier.LARGE]
    assert explorers
    answered = replace(EASY, rules_answered=True)
    for job in explorers:
        escalated = _decide(policy, job, floor=Tier.MEDIUM)
        assert escalated.tier is Tier.MEDIUM and not _explored(escalated)
        failed = _decide(policy, job, replace(EASY, stronger=True))  # one tier up, no further
        assert failed.tier is Tier.MEDIUM and not _explored(failed)
        for kind in (PROMPT, DOCUMENT):  # no model call where the rules answered
            by_rules = decide(kind, answered, policy, DecisionContext(job_id=job))
            assert by_rules.strategy is Strategy.RULES and by_rules.tier is Tier.SMALL
            assert not _explored(by_rules)
    assert not any(_explored(_decide(policy, "")) for _ in range(3))


def test_a_class_with_every_tier_scored_explores_down_not_up() -> None:
    two_tiers = _policy(0.3, 0.2, ladder=(Tier.SMALL, Tier.LARGE))
    decisions = [_decide(two_tiers, job) for job in IDS]
    explored = [d for d in decisions if _explored(d)]
    assert _within_binomial(len(explored), len(IDS), 0.2), len(explored)
    assert all(d.tier is Tier.SMALL and "instead of large" in d.reasons[1] for d in explored)
    # where the scorers start on the cheapest tier already, nothing explores either way
    cheap = _policy(0.8, 0.5, ladder=(Tier.SMALL, Tier.LARGE))
    assert not any(_explored(_decide(cheap, job)) for job in IDS)


def test_learned_routing_without_a_scorer_for_the_top_tier_explores_up() -> None:
    policy = _without_top(_policy(0.3, 0.2))
    decisions = [_decide(policy, job) for job in IDS]
    large = [d for d in decisions if d.tier is Tier.LARGE]
    assert _within_binomial(len(large), len(IDS), 0.2), len(large)
    assert all(
        d.reasons
        == (
            "learned P(good): small 0.30; no cheaper tier is both close enough and likely enough",
            f"{UP} (explore_share 20%)",
        )
        for d in large
    )
    assert all(d.tier is Tier.SMALL and not _explored(d) for d in decisions if d.tier is not Tier.LARGE)


def test_exploring_up_yields_to_review_the_cap_and_the_constraints() -> None:
    policy = _rules_only(0.5, tier_models=FAKE_TIERS)
    job = next(job for job in IDS if _decide(policy, job).tier is Tier.LARGE)
    reviewing = policy.model_copy(update={"review_high_risk": True})
    assert _decide(reviewing, job, replace(EASY, risk=0.9)).strategy is Strategy.REVIEW
    # a class capped below the ladder's top explores up to its cap: the top tier it may reach
    capped = _decide(policy.model_copy(update={"max_tier": {"prompt": Tier.MEDIUM}}), job)
    assert capped.tier is Tier.MEDIUM and capped.reasons[1].startswith("exploring: started on medium,")
    broken = DecisionContext(job_id=job, unavailable=frozenset({"fake:fake-large"}))
    moved = decide(PROMPT, EASY, policy, broken)
    assert moved.tier is Tier.MEDIUM and "large has no usable model" in moved.reasons
    assert _explored(moved)


def test_exploring_up_lets_reflect_start_from_the_rules_alone() -> None:
    # The rules start every prompt on small and the judge accepts every recorded answer: without
    # exploration only small's outcomes are ever seen (wrong on 90% of class b), and reflect,
    # which needs two tiers with min_samples outcomes, never fits anything.
    stream = _stream(2000, 2, b_small_good=0.1)

    def run(share: float, prompts: list[StreamedPrompt]) -> OnlineRun:
        learning = LearningSettings(
            min_samples=20, min_version_samples=20, max_share_step=0.5, explore_share=share
        )
        return stream_prompts([], prompts, learning, reflect_every=100, fitted=recorded_policy(learning))

    def tail_accuracy(whole: OnlineRun, head: OnlineRun) -> float:
        return (whole.correct - head.correct) / (whole.prompts - head.prompts)

    blind, blind_head = run(0.0, stream), run(0.0, stream[:1000])
    assert blind.versions == 0 and blind.large_calls == 0
    assert abs(tail_accuracy(blind, blind_head) - blind_head.accuracy) < 0.05
    start = run(0.05, stream[:300])  # large has fewer than min_samples outcomes yet
    assert start.versions == 0 and start.accuracy < 0.6
    exploring, exploring_head = run(0.05, stream), run(0.05, stream[:1000])
    assert exploring.versions >= 1
    # the second half: class b learned and started on large
    assert tail_accuracy(exploring, exploring_head) > start.accuracy + 0.3
