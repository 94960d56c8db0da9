"""The job state machine and the tier ladder."""

from __future__ import annotations

import pytest

from tierflow.routing.errors import InvalidTransition
from tierflow.routing.states import TERMINAL_STATES, JobState, Tier, check_transition, next_tier, sources_of


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (JobState.QUEUED, JobState.CLASSIFIED),
        (JobState.CLASSIFIED, JobState.RUNNING),
        (JobState.RUNNING, JobState.ESCALATED),
        (JobState.ESCALATED, JobState.RUNNING),
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.NEEDS_REVIEW),
        (JobState.NEEDS_REVIEW, JobState.SUCCEEDED),
        (JobState.QUEUED, JobState.FAILED),
    ],
)
def test_allowed_transitions(current: JobState, target: JobState) -> None:
    check_transition(current, target)
    assert current in sources_of(target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.SUCCEEDED, JobState.RUNNING),
        (JobState.FAILED, JobState.QUEUED),
        (JobState.SUCCEEDED, JobState.FAILED),
        (JobState.RUNNING, JobState.QUEUED),
    ],
)
def test_forbidden_transitions_raise_with_both_states(current: JobState, target: JobState) -> None:
    with pytest.raises(InvalidTransition) as caught:
        check_transition(current, target)
    assert (caught.value.current, caught.value.target) == (current.value, target.value)


def test_terminal_states_lead_nowhere_but_review() -> None:
    ended = {JobState.SUCCEEDED, JobState.NEEDS_REVIEW, JobState.NEEDS_CLARIFICATION, JobState.FAILED}
    assert ended == TERMINAL_STATES
    for state in (JobState.SUCCEEDED, JobState.NEEDS_CLARIFICATION, JobState.FAILED):
        assert not any(state in sources_of(target) for target in JobState)


def test_ladder_goes_up_one_tier_and_stops_at_the_top() -> None:
    assert next_tier(Tier.SMALL) is Tier.MEDIUM
    assert next_tier(Tier.MEDIUM) is Tier.LARGE
    assert next_tier(Tier.LARGE) is None
    assert next_tier(Tier.SMALL, (Tier.SMALL, Tier.LARGE)) is Tier.LARGE
    assert Tier.MEDIUM.queue == "tier.medium"


def test_errors_cross_a_process_boundary_with_their_fields() -> None:
    import pickle

    from tierflow.routing.errors import ConfigError, InputError, ProviderRateLimited

    for error in (
        ProviderRateLimited("openai", "gpt-4o-mini", "429", retry_after=2.5),
        InputError("jobs.jsonl", 3, "payload.text", "Field required"),
        ConfigError("tiers", "bad"),
        InvalidTransition("queued", "running"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy._fields == error._fields
    assert pickle.loads(pickle.dumps(ProviderRateLimited("a", "b", "c", 1.0))).retry_after == 1.0
