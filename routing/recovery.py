"""Which unfinished jobs to send again: leases, lost messages and giving up. Pure.

A job that is not terminal is at any moment either held by a worker (a task of it
is received or running there) or waiting for a message in one queue. Workers beat
every few seconds: each beat names the jobs the worker holds, renewing their lease,
and for every queue the newest publish time among the messages it has received.

- Held by a live worker (its lease is current): leave it, however long its model
  call takes, unless it has made no progress for the whole stage timeout.
- Not held, and its queue has handed out a message published clearly after this
  job's own: queues are first in, first out, so this job's message is not waiting
  there any more. It was lost (a flushed broker, a dead worker's unacknowledged
  message, a crash between commit and publish): send it again. This does not wait
  for the queue to drain, so it holds under a feed that never lets the queue empty.
- Not held, and its queue is empty and quiet: nothing can be waiting: send it again.
- Otherwise it is waiting its turn behind a backlog.

A job sent again too many times without moving on fails, with the last cause seen;
one that moves on between re-sends (a worker killed now and then) starts afresh.
This module must not import celery, sqlalchemy or redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# How much later than this job's message another message must have been published, for
# its delivery to prove this one gone: covers the gap between the commit that records
# a send and the publish itself, and clock skew between the machines that publish.
REORDER_MARGIN_S = 5.0


class Recovery(str, Enum):
    WAIT = "wait"
    RESEND = "resend"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Unfinished:
    """What the store says of one non-terminal job, times in seconds since the epoch."""

    job_id: str
    queue: str  # the queue its next message goes to
    sent_at: float  # when its newest message was recorded as sent
    stale_after: float  # no progress by then: the stage timeout's backstop
    redeliveries: int  # times sent again since the job last moved to a new state


@dataclass(frozen=True)
class ClusterView:
    """What the workers' beats and the broker say, at `now`."""

    now: float
    held: frozenset[str]  # job ids held by workers whose lease is current
    newest_received: dict[str, float]  # queue -> newest publish time of a received message
    queue_lengths: dict[str, int]  # messages waiting, as the broker reports them


@dataclass(frozen=True)
class RecoveryRules:
    lease_s: float
    max_redeliveries: int

    def resend_delay_s(self, redeliveries: int) -> float:
        """How long a re-sent job must stay unseen before it is sent again: one lease, then
        doubling, so that a job that keeps getting lost is given up on within hours."""
        return float(self.lease_s * 2**redeliveries)


def recovery_for(job: Unfinished, view: ClusterView, rules: RecoveryRules) -> tuple[Recovery, str]:
    """What to do with one unfinished job, and why (the reason a give-up records)."""
    if job.job_id in view.held:
        if view.now < job.stale_after:
            return Recovery.WAIT, "held by a live worker"
        return _resend(job, rules, "no progress within the stage timeout while held by a worker")
    if view.now - job.sent_at < rules.resend_delay_s(job.redeliveries):
        return Recovery.WAIT, "sent recently"
    newest = view.newest_received.get(job.queue)
    if newest is not None and newest > job.sent_at + REORDER_MARGIN_S:
        return _resend(job, rules, f"its message left {job.queue} (a younger one was delivered)")
    if view.queue_lengths.get(job.queue, 0) == 0:
        return _resend(job, rules, f"not held by any live worker and {job.queue} is empty")
    return Recovery.WAIT, f"waiting in {job.queue}"


def _resend(job: Unfinished, rules: RecoveryRules, cause: str) -> tuple[Recovery, str]:
    if job.redeliveries >= rules.max_redeliveries:
        return Recovery.GIVE_UP, f"given up after {job.redeliveries} redeliveries; last cause: {cause}"
    return Recovery.RESEND, cause


def give_up_after_s(rules: RecoveryRules) -> float:
    """The longest a job that is lost every time can take before it fails (for the docs)."""
    return sum(rules.resend_delay_s(n) for n in range(rules.max_redeliveries + 1))
