"""Job states and the transitions between them. Pure: imports nothing of the services."""

from __future__ import annotations

from enum import Enum

from tierflow.routing.errors import InvalidTransition


class JobState(str, Enum):
    QUEUED = "queued"
    CLASSIFIED = "classified"
    RUNNING = "running"
    ESCALATED = "escalated"
    # Split into child jobs by its analysis: it waits for every child to end, then is merged.
    DECOMPOSED = "decomposed"
    SUCCEEDED = "succeeded"
    NEEDS_REVIEW = "needs_review"
    # The job asks its customer a question (its result) instead of answering: a reply is a new job.
    NEEDS_CLARIFICATION = "needs_clarification"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


class Tier(str, Enum):
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"

    @property
    def queue(self) -> str:
        return f"tier.{self.value}"


TIER_LADDER: tuple[Tier, ...] = (Tier.SMALL, Tier.MEDIUM, Tier.LARGE)

# needs_review is terminal for the pipeline: a person's decision ends it later.
TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.NEEDS_REVIEW, JobState.NEEDS_CLARIFICATION, JobState.FAILED}
)
# Where a job may end without a model's accepted answer, besides failing.
HELD = frozenset({JobState.NEEDS_REVIEW, JobState.NEEDS_CLARIFICATION})

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.CLASSIFIED, JobState.DECOMPOSED, JobState.FAILED}),
    # merged in the transaction that ends its last child, or running its merge expert
    JobState.DECOMPOSED: frozenset({JobState.RUNNING, JobState.SUCCEEDED, *HELD, JobState.FAILED}),
    JobState.CLASSIFIED: frozenset({JobState.RUNNING, *HELD, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.ESCALATED, JobState.SUCCEEDED, *HELD, JobState.FAILED}),
    JobState.ESCALATED: frozenset({JobState.RUNNING, *HELD, JobState.FAILED}),
    JobState.NEEDS_REVIEW: frozenset({JobState.SUCCEEDED, JobState.FAILED}),
    JobState.NEEDS_CLARIFICATION: frozenset(),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
}


def sources_of(target: JobState) -> frozenset[JobState]:
    """The states a job may move to `target` from."""
    return frozenset(state for state, targets in _ALLOWED.items() if target in targets)


def check_transition(current: JobState, target: JobState) -> None:
    """Raise InvalidTransition unless the state machine allows current -> target."""
    if target not in _ALLOWED[current]:
        raise InvalidTransition(current.value, target.value)


def next_tier(tier: Tier, ladder: tuple[Tier, ...] = TIER_LADDER) -> Tier | None:
    """The tier above `tier` on the ladder, or None at the top."""
    position = ladder.index(tier)
    return ladder[position + 1] if position + 1 < len(ladder) else None
