"""aggregate (chord callback) and attempt_failed (chord error handler), one path for both.

Both end the attempt through `finish_attempt`: in one transaction guarded by claiming
the attempt, write the expert rows the chord returned, judge, and apply the verdict,
so a second delivery or a second chord for the same attempt writes nothing. An
escalation creates the next attempt in that transaction and fans it out after the
commit, with no run_job in between.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from celery import current_app, shared_task, signals
from kombu.utils.json import loads
from sqlalchemy.exc import OperationalError

from tierflow.routing.analysis import Analysis, analyze_rules, job_text
from tierflow.routing.decision import Decision, Strategy, decide
from tierflow.routing.errors import UnknownKind
from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.kinds.spec import KindSpec
from tierflow.routing.policy import Policy
from tierflow.routing.states import JobState, Tier
from tierflow.routing.verdict import Verdict, VerdictAction, judge
from tierflow.store.db import transaction
from tierflow.store.lifecycle import (
    AttemptView,
    JobView,
    callback_sent,
    claim_attempt,
    conclude,
    create_attempt,
    expert_results,
    load_job_attempt,
    move_job,
    record_verdict,
    write_expert_results,
    write_feedback,
)
from tierflow.tasks.attempts import expert_context, fan_out, send_fanouts
from tierflow.tasks.context import decision_context
from tierflow.tasks.families import held_by_children, merge_when_ready
from tierflow.tasks.features import attempt_cascade_gain
from tierflow.tasks.judging import send_judging
from tierflow.tasks.runtime import Runtime, runtime_for
from tierflow.tasks.search import search_on, searching

log = logging.getLogger(__name__)


# Its result is not kept: no one waits on the chord's callback (its verdict is in the store),
# and keeping it cost the result backend a read and a write for every attempt.
@shared_task(name="tierflow.aggregate", bind=True, ignore_result=True)
def aggregate(self: Any, markers: list[dict[str, Any]], job_id: str, attempt: int) -> dict[str, Any]:
    rows = chord_rows(markers)
    verdict = finish_attempt(self.app, job_id, attempt, None, rows, self.request.hostname)
    return {"job_id": job_id, "attempt": attempt, "verdict": verdict}


# Not bound: Celery calls an errback with (request, exc, traceback) only when it is unbound.
@shared_task(name="tierflow.attempt_failed", ignore_result=True)
def attempt_failed(request: Any, exc: BaseException, traceback: Any, job_id: str, attempt: int) -> None:
    log.warning("attempt %s of %s failed in its chord: %r", attempt, job_id, exc)
    failure = f"chord failed: {type(exc).__name__}: {exc}"
    finish_attempt(current_app, job_id, attempt, failure, None, getattr(request, "hostname", None))


def chord_rows(markers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The expert rows a chord returned, by expert: a redelivered expert may have returned
    twice, and a success counts over a failure."""
    rows: dict[str, dict[str, Any]] = {}
    for marker in markers:
        row = marker.get("row") if isinstance(marker, dict) else None
        if row is None:
            continue
        if isinstance(row, str):  # as an expert returns it; a dict, as an earlier release did
            row = loads(row)
        held = rows.get(row["expert"])
        if held is None or (held["error"] is not None and row["error"] is None):
            rows[row["expert"]] = row
    return rows


@signals.before_task_publish.connect
def note_callback_sent(sender: str | None = None, body: Any = None, **_: Any) -> None:
    """A chord's last expert publishes the aggregate: record that the job waits on it now, so
    that recovery does not take a callback queued behind a backlog for a lost message."""
    if sender != "tierflow.aggregate" or not isinstance(body, list | tuple) or not body:
        return
    args = body[0]
    if not isinstance(args, list | tuple) or len(args) < 2 or not isinstance(args[1], str):
        return
    runtime = runtime_for(current_app)
    for tries_left in (1, 0):  # once more on a connection the server dropped (pools do not ping)
        try:
            with transaction(runtime.sessions) as session:
                callback_sent(session, args[1])
            return
        except OperationalError as exc:
            if not tries_left:
                # Not fatal: the callback goes out all the same; at worst recovery re-sends the attempt.
                log.warning("could not record the callback of %s as sent: %s", args[1], type(exc).__name__)


def finish_attempt(
    app: Any,
    job_id: str,
    attempt: int,
    failure: str | None,
    returned: dict[str, dict[str, Any]] | None = None,
    worker: str | None = None,
) -> str | None:
    """Judge the attempt once and apply the verdict; return the verdict, None if already judged."""
    runtime = runtime_for(app)
    policy = runtime.policy()
    with transaction(runtime.sessions) as session:
        job, current = load_job_attempt(session, job_id, attempt)
        if job is None or current is None or not claim_attempt(session, job_id, attempt, worker):
            return None
        verdict, escalated = _judged(session, runtime, policy, job, current, failure, returned or {})
        # the job has ended: its parent, if it was the last child, merges in this transaction
        merges = merge_when_ready(session, runtime, job_id, job.parent_id) if escalated is None else []
    if escalated is not None:
        context = expert_context(job.kind, job.payload, escalated.as_dict())
        fan_out(app, job_id, attempt + 1, escalated.tier.value, list(escalated.experts), context)
    elif verdict.action is VerdictAction.ACCEPT:  # after the commit: the judge never delays the job
        send_judging(app, policy, job_id)
    send_fanouts(app, merges)
    return verdict.action.value


def _judged(
    session: Any,
    runtime: Runtime,
    policy: Policy,
    job: JobView,
    current: AttemptView,
    failure: str | None,
    returned: dict[str, dict[str, Any]],
) -> tuple[Verdict, Decision | None]:
    """The claimed attempt's verdict, applied: the job ended, or its next attempt (returned)
    created running."""
    job_id, attempt, tier = job.id, current.number, Tier(current.tier)
    if job.kind not in runtime.kinds:
        verdict = undeclared(job.kind)
        record_verdict(session, job_id, attempt, verdict.action.value, 0.0, list(verdict.reasons))
        conclude(session, job_id, attempt, tier, verdict)
        return verdict, None
    # judged as the attempt's specialist runs the kind: its checks and tier limits
    kind = runtime.kinds.get(job.kind).as_specialist(current.decision.get("specialist"))
    names = current.decision["experts"]
    rows = _rows(session, job_id, attempt, names, returned)
    outcomes = _outcomes(kind, names, rows, failure)
    gain = (
        attempt_cascade_gain(runtime, policy, kind, job.payload, outcomes)
        if tier is not policy.ladder[-1]
        else None
    )
    verdict = judge(kind, outcomes, tier, policy, gain, job_text(kind, job.payload))
    if current.decision.get("strategy") == Strategy.MERGE.value:
        verdict = _merge_verdict(session, job_id, verdict)
        record_verdict(session, job_id, attempt, verdict.action.value, verdict.quality, list(verdict.reasons))
        conclude(session, job_id, attempt, tier, verdict)
        return verdict, None
    escalated: Decision | None = None
    searched = searching(current.decision, verdict)  # the search's next step, else by tier
    if searched:
        step = (attempt, tier, current.decision)
        verdict, escalated = search_on(session, runtime, policy, job, step, verdict, outcomes)
    elif verdict.action is VerdictAction.ESCALATE and verdict.next_tier is not None:
        verdict, escalated = _escalate(session, runtime, policy, job, attempt, verdict)
    record_verdict(session, job_id, attempt, verdict.action.value, verdict.quality, list(verdict.reasons))
    _feedback(session, job_id, attempt, tier, verdict)
    if escalated is None and not searched:
        conclude(session, job_id, attempt, tier, verdict)
    return verdict, escalated


def _merge_verdict(session: Any, job_id: str, verdict: Verdict) -> Verdict:
    """A model merge is not escalated (its parts are judged already): a merge that fails its
    checks, or whose parts did not all succeed, goes to a person with the merged draft."""
    held = held_by_children(session, job_id)
    if verdict.action is VerdictAction.ESCALATE:
        held = [*verdict.reasons, "the merge failed its checks", *held]
    elif verdict.action is VerdictAction.ACCEPT and held:
        held = [*verdict.reasons, *held]
    else:
        return verdict
    return replace(verdict, action=VerdictAction.NEEDS_REVIEW, reasons=tuple(held), next_tier=None)


def _rows(
    session: Any, job_id: str, attempt: int, names: list[str], returned: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The attempt's expert rows: what the chord returned, written now, and what the store has
    for any expert the chord did not return (a failed chord, a message of an earlier release)."""
    if returned:
        write_expert_results(session, list(returned.values()))
    rows: dict[str, Any] = dict(returned)
    if any(name not in rows for name in names):
        stored = {row.expert: row for row in expert_results(session, job_id, attempt)}
        rows = {**{name: _as_dict(row) for name, row in stored.items()}, **rows}
    return rows


def _as_dict(row: Any) -> dict[str, Any]:
    return {"output": row.output, "confidence": row.confidence, "error": row.error}


def _outcomes(
    kind: KindSpec, names: list[str], rows: dict[str, dict[str, Any]], failure: str | None
) -> list[ExpertOutcome]:
    outcomes = []
    for name in names:
        row = rows.get(name)
        known = kind.expert(name)
        uses_model = known.uses_model if known else True
        if row is None:
            outcomes.append(ExpertOutcome(name, uses_model, None, None, failure or "no result recorded"))
        else:
            outcomes.append(ExpertOutcome(name, uses_model, row["output"], row["confidence"], row["error"]))
    return outcomes


def _escalate(
    session: Any, runtime: Runtime, policy: Policy, job: JobView, attempt: int, verdict: Verdict
) -> tuple[Verdict, Decision | None]:
    """Start the next attempt where the policy and the constraints allow one; else hold for review.

    The attempt is created running and the job passes through escalated to running in this
    transaction: the caller fans the attempt out after the commit, with no run_job between."""
    assert verdict.next_tier is not None
    kind = runtime.kinds.get(job.kind)
    analysis = Analysis.from_dict(job.analysis) if job.analysis else analyze_rules(kind, job.payload)
    ctx = decision_context(session, runtime, policy, job)
    decision = decide(kind, analysis, policy, ctx, floor=verdict.next_tier)
    if decision.strategy is Strategy.REVIEW:
        held = (*verdict.reasons, f"not escalated: {decision.reasons[-1]}")
        return replace(verdict, action=VerdictAction.NEEDS_REVIEW, reasons=held, next_tier=None), None
    create_attempt(session, job.id, attempt + 1, decision.tier.value, decision.as_dict(), decision.tier.queue)
    fields = {"tier": decision.tier.value, "attempt": attempt + 1}
    move_job(session, job.id, JobState.RUNNING, runtime.stage_timeout, through=JobState.ESCALATED, **fields)
    return verdict, decision


def undeclared(kind: str) -> Verdict:
    """The verdict on a job whose kind is no longer declared: it fails, saying so."""
    return Verdict(VerdictAction.FAIL, 0.0, None, (str(UnknownKind(kind)),))


def hold_for_review(session: Any, job_id: str, attempt: int, tier: Tier, reasons: tuple[str, ...]) -> None:
    """A decision that sends the job to a person without any model call ends the attempt here."""
    end_attempt(session, job_id, attempt, tier, Verdict(VerdictAction.NEEDS_REVIEW, 0.0, None, reasons))


def end_attempt(session: Any, job_id: str, attempt: int, tier: Tier, verdict: Verdict) -> None:
    """An attempt ended without a chord (held for a person, or of an undeclared kind)."""
    reasons = verdict.reasons
    claim_attempt(session, job_id, attempt)
    record_verdict(session, job_id, attempt, verdict.action.value, 0.0, list(reasons))
    _feedback(session, job_id, attempt, tier, verdict)
    conclude(session, job_id, attempt, tier, verdict)


def _feedback(session: Any, job_id: str, attempt: int, tier: Tier, verdict: Verdict) -> None:
    """The automatic outcome signal for the tier that answered this attempt."""
    write_feedback(
        session,
        {
            "dedupe_key": f"auto:{job_id}:{attempt}",
            "job_id": job_id,
            "attempt": attempt,
            "tier": tier.value,
            "source": "automatic",
            "correct": verdict.action is VerdictAction.ACCEPT,
            "score": verdict.quality,
            "note": "; ".join(verdict.reasons),
        },
    )
