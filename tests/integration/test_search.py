"""The strategy search on the real PostgreSQL, Redis and a real Celery worker.

The fake models' confidence falls with the text's hardness and rises with the tier's
strength: a prompt with three hard words is uncertain on the small tier (about 0.52 < 0.70)
and sure enough on the medium one (about 0.77).
"""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from tests.integration.conftest import run, running_worker, wait_terminal, write_jobs
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, ExpertResult, Job, Result
from tierflow.store.outcomes import judged_attempts
from tierflow.store.policies import publish_policy
from tierflow.store.report_queries import Selection
from tierflow.tasks.submission import submit_file
from tierflow.worker.report import write_report

UNCERTAIN_ON_SMALL = "However, although it fails intermittently, summarise the release notes."
QUESTION = "Which order is the refund for, and what went wrong with it?"


def _publish(runtime, search):
    """The policy with this search, and no exploration: every job starts where its difficulty says."""
    policy = runtime.policy()
    learning = policy.learning.model_dump(mode="json") | {"explore_share": 0.0}
    with transaction(runtime.sessions) as session:
        publish_policy(
            session, policy.with_overrides({"search": search, "learning": learning}), "test: search"
        )
    runtime.forget_policy()


def _run(app, runtime, tmp_path, jobs):
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        assert report.accepted == len(jobs)
        wait_terminal(runtime, report.batch_id, timeout_s=90)
    return report.batch_id


def _rows(runtime, job_id):
    with transaction(runtime.sessions) as session:
        job = session.get(Job, job_id)
        attempts = session.scalars(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number))
        experts = session.scalars(select(ExpertResult).where(ExpertResult.job_id == job_id)).all()
        result = session.scalars(select(Result).where(Result.job_id == job_id)).one()
        costs = {n: sum(e.cost_usd for e in experts if e.attempt == n) for n in {e.attempt for e in experts}}
        return job.state, list(attempts), costs, result, experts


def _cell(page: str, label: str) -> str:
    match = re.search(rf"<td>{re.escape(label)}</td><td class=\"n\">([^<]*)</td>", page)
    assert match, f"no summary row {label!r}"
    return match.group(1)


def test_an_uncertain_direct_answer_backtracks_to_a_verifier(make_app, tmp_path, env):
    app, runtime = make_app()
    order = ["direct", "retrieval", "verify@medium", "review"]
    _publish(runtime, {"prompt": {"order": order, "max_steps": 3}})
    job = {"id": "search-1", "kind": "prompt", "payload": {"prompt": UNCERTAIN_ON_SMALL}}
    _run(app, runtime, tmp_path, [job])
    state, (direct, verify), costs, result, experts = _rows(runtime, "search-1")
    assert state == "succeeded" and (result.attempt, result.tier, result.verdict) == (2, "medium", "accept")
    assert (direct.tier, direct.decision["strategy"], direct.decision["experts"]) == (
        "small",
        "direct",
        ["answerer"],
    )
    assert direct.verdict == "escalate" and direct.quality < 0.7
    assert direct.reasons["reasons"][-1] == "search moves on to verify@medium on medium"
    assert (verify.tier, verify.decision["strategy"]) == ("medium", "verify")
    assert verify.decision["experts"] == ["answerer", "verifier"] and verify.verdict == "accept"
    why = verify.decision["reasons"]
    assert why[0] == f"direct on small judged uncertain (quality {direct.quality:.2f})"
    assert "skipped retrieval: prompt jobs read no knowledge base" in why
    search = verify.decision["search"]
    assert (search["step"], search["steps"], search["plan"]["order"]) == ("verify@medium", 2, order)
    first_answer = next(e.output for e in experts if e.attempt == 1 and e.expert == "answerer")
    carried = search["carried"]
    assert (carried["draft"], carried["draft_quality"]) == (first_answer, direct.quality), "the draft is kept"
    assert costs[1] > 0 and costs[2] > costs[1], "two medium calls cost more than one small one"
    shown = run(env, "explain", "search-1", check=True).stdout
    assert (
        f"search prompt: step direct of {' -> '.join(order)}, model steps 1/3, cost ${costs[1]:.6f}" in shown
    )
    assert f"step verify@medium of {' -> '.join(order)}, model steps 2/3, cost ${costs[2]:.6f}" in shown
    assert "search moves on to verify@medium on medium" in shown
    # what reflect learns the order from: each judged step with its plan, step, outcome and cost
    with transaction(runtime.sessions) as session:
        judged = [r for r in judged_attempts(session) if r.job_id == "search-1"]
    assert [(r.search["key"], r.search["step"], r.good) for r in judged] == [
        ("prompt", "direct", False),
        ("prompt", "verify@medium", True),
    ]
    assert [r.cost_usd for r in judged] == [costs[1], costs[2]]


def test_a_search_ends_needs_clarification_with_the_question_as_its_result(make_app, tmp_path, env):
    app, runtime = make_app()
    search = {
        "support": {"order": ["direct", "clarify"], "question": QUESTION},
        "support/general": {"order": ["clarify"]},
    }
    _publish(runtime, search)
    jobs = [
        {"id": "ask-1", "kind": "support", "payload": {"text": f"I want a refund. {UNCERTAIN_ON_SMALL}"}},
        {"id": "ask-2", "kind": "support", "payload": {"text": "Hello, the thing I wanted is not right."}},
    ]
    batch = _run(app, runtime, tmp_path, jobs)
    state, (direct, asked), costs, result, _ = _rows(runtime, "ask-1")
    assert state == "needs_clarification"
    assert (result.attempt, result.verdict, result.output) == (
        2,
        "needs_clarification",
        {"question": QUESTION},
    )
    assert direct.decision["strategy"] == "direct" and "retriever" not in direct.decision["experts"]
    assert direct.verdict == "escalate" and direct.reasons["reasons"][-1] == "search moves on to clarify"
    assert (asked.decision["strategy"], asked.verdict, asked.decision["models"]) == (
        "clarify",
        "needs_clarification",
        [],
    )
    assert costs[1] > 0 and 2 not in costs, "the question costs no model call"
    state, (only,), _, result, _ = _rows(runtime, "ask-2")
    assert (state, only.decision["strategy"], result.verdict) == (
        "needs_clarification",
        "clarify",
        "needs_clarification",
    )
    assert "Could you tell us a little more" in result.output["question"]
    status = run(env, "status", batch, check=True).stdout
    assert re.search(r"needs_clarification\s*│\s*2", status), status
    rows = [json.loads(line) for line in run(env, "results", batch, check=True).stdout.split("\n") if line]
    assert {row["job_id"]: row["output"] for row in rows}["ask-1"] == {"question": QUESTION}
    write_report(runtime.sessions, runtime.settings, Selection(batch_id=batch), tmp_path / "report.html")
    assert _cell((tmp_path / "report.html").read_text(), "needs clarification") == "2"
