"""Online evaluation: a stream through decide, judge and reflect, revealing only what was called."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.learning import LearningSettings, RoutingTarget, TargetKind
from tierflow.routing.online import StreamedPrompt, first_fit, stream_prompts


def _prompts(n: int, seed: int, answer: bool = False) -> list[StreamedPrompt]:
    """Small is right when the first feature is negative; large is right 95% of the time."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        x = rng.normal(size=3)
        small = bool(x[0] + 0.3 * rng.normal() < 0)
        # the answer's feature tells (noisily) whether the small answer was right
        said = np.array([float(small) + 0.3 * rng.normal()]) if answer else None
        prompts.append(StreamedPrompt(x, said, small, bool(rng.random() < 0.95), 0.001, 0.03))
    return prompts


def _cost_target(share: float) -> LearningSettings:
    return LearningSettings(target=RoutingTarget(kind=TargetKind.COST, value=share), min_samples=20)


def test_the_first_fit_learns_from_the_training_prompts() -> None:
    policy = first_fit(_prompts(300, 1), _cost_target(0.5), None)
    learned = policy.learned["prompt"]  # type: ignore[index]
    assert set(learned.tiers) == {"small", "large"}
    assert policy.version == 2 and policy.learning.max_share_step == 0.2  # the bound is back for the stream


def test_a_learned_stream_beats_random_routing_at_the_same_share() -> None:
    train, stream = _prompts(300, 1), _prompts(400, 2)
    run = stream_prompts(train, stream, _cost_target(0.5), reflect_every=100)
    assert 0.35 < run.large_share < 0.65
    small = np.mean([p.small_correct for p in stream])
    large = np.mean([p.large_correct for p in stream])
    random_at_share = small + run.large_share * (large - small)
    assert run.accuracy > random_at_share + 0.1
    assert run.revealed == run.prompts  # pre-generation only: one tier called per prompt
    assert run.cost_usd == pytest.approx(run.large_calls * 0.03 + (run.prompts - run.large_calls) * 0.001)


def test_the_cascade_escalates_small_answers_and_pays_for_both_calls() -> None:
    train, stream = _prompts(300, 3, answer=True), _prompts(300, 4, answer=True)
    run = stream_prompts(train, stream, _cost_target(0.4), reflect_every=0)
    escalated = run.revealed - run.prompts  # each escalation reveals a second outcome
    assert escalated > 0
    assert run.cost_usd > run.large_calls * 0.03  # escalated prompts paid for the small call too


def test_tighter_cost_targets_call_large_less() -> None:
    train, stream = _prompts(300, 5), _prompts(300, 6)
    shares = [stream_prompts(train, stream, _cost_target(y), 100).large_share for y in (0.2, 0.5, 0.8)]
    assert shares[0] < shares[1] < shares[2]
