"""routing.recovery: which unfinished jobs are sent again, from made-up beats and queues."""

from __future__ import annotations

from tierflow.routing.recovery import (
    REORDER_MARGIN_S,
    ClusterView,
    Recovery,
    RecoveryRules,
    Unfinished,
    give_up_after_s,
    recovery_for,
)

RULES = RecoveryRules(lease_s=30.0, max_redeliveries=5)
NOW = 10_000.0


def job(sent_ago: float = 60.0, stale_in: float = 500.0, redeliveries: int = 0) -> Unfinished:
    return Unfinished("j1", "tier.small", NOW - sent_ago, NOW + stale_in, redeliveries)


def view(held: tuple[str, ...] = (), newest: float | None = None, waiting: int = 3) -> ClusterView:
    received = {} if newest is None else {"tier.small": newest}
    return ClusterView(NOW, frozenset(held), received, {"tier.small": waiting})


def test_a_held_job_waits_however_long_ago_it_was_sent() -> None:
    action, _ = recovery_for(job(sent_ago=300.0), view(held=("j1",), newest=NOW), RULES)
    assert action is Recovery.WAIT


def test_a_held_job_with_no_progress_past_its_stage_timeout_is_sent_again() -> None:
    action, cause = recovery_for(job(stale_in=-1.0), view(held=("j1",)), RULES)
    assert action is Recovery.RESEND and "stage timeout" in cause


def test_a_job_overtaken_by_a_younger_message_in_a_busy_queue_is_lost() -> None:
    sent = NOW - 60.0
    action, cause = recovery_for(job(), view(newest=sent + REORDER_MARGIN_S + 0.1, waiting=500), RULES)
    assert action is Recovery.RESEND and "younger" in cause


def test_a_message_published_within_the_margin_proves_nothing() -> None:
    sent = NOW - 60.0
    action, _ = recovery_for(job(), view(newest=sent + REORDER_MARGIN_S - 0.1, waiting=500), RULES)
    assert action is Recovery.WAIT


def test_a_job_behind_a_backlog_waits() -> None:
    assert recovery_for(job(sent_ago=3600.0), view(newest=None, waiting=10_000), RULES)[0] is Recovery.WAIT


def test_an_unheld_job_whose_queue_is_empty_is_sent_again_after_a_lease() -> None:
    assert recovery_for(job(sent_ago=29.0), view(waiting=0), RULES)[0] is Recovery.WAIT
    assert recovery_for(job(sent_ago=31.0), view(waiting=0), RULES)[0] is Recovery.RESEND


def test_a_job_sent_again_waits_longer_each_time() -> None:
    assert recovery_for(job(sent_ago=100.0, redeliveries=2), view(waiting=0), RULES)[0] is Recovery.WAIT
    assert recovery_for(job(sent_ago=121.0, redeliveries=2), view(waiting=0), RULES)[0] is Recovery.RESEND


def test_giving_up_names_the_count_and_the_cause() -> None:
    action, reason = recovery_for(job(sent_ago=10_000.0, redeliveries=5), view(waiting=0), RULES)
    assert action is Recovery.GIVE_UP
    assert "5 redeliveries" in reason and "tier.small is empty" in reason


def test_a_job_lost_every_time_is_given_up_within_an_hour_at_the_defaults() -> None:
    assert give_up_after_s(RULES) == 30 * (1 + 2 + 4 + 8 + 16 + 32)
    assert give_up_after_s(RULES) < 3600
