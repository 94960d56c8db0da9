"""Supervisor decomposition through a real worker: a ticket that asks several things becomes a
parent with one child per ask, each routed to its own specialist and judged on its own, and the
parent gets one merged result; a redelivered child or merge writes nothing twice; a model merge
declared in a kinds file writes one reply from the parts."""

from __future__ import annotations

import json
from collections import Counter

from sqlalchemy import func, select

from tests.integration.conftest import run, running_worker, wait_terminal, write_jobs
from tierflow.store.db import transaction
from tierflow.store.families import ready_parents
from tierflow.store.models import Attempt, ExpertResult, Job, Result
from tierflow.tasks.aggregate import finish_attempt
from tierflow.tasks.families import merge_parent
from tierflow.tasks.submission import submit_file

TWO_ASKS = (
    "Hi team,\n"
    "1. I was charged twice for my March subscription, please refund the extra charge.\n"
    "2. My parcel NW-5521 has not arrived and the tracking has not moved for a week.\n"
    "Thanks, Sam"
)
THREE_ASKS = (
    "I cannot log in since I changed my password, it says my account is locked. "
    "Also, the app crashes with an error every time I open my basket. "
    "Separately, where is my parcel? The tracking shows nothing since Monday."
)
ONE_ASK = "My parcel has not arrived yet and the tracking shows nothing. Can you check it?"
JOBS = [
    {"id": "two", "kind": "support", "payload": {"text": TWO_ASKS, "subject": "Two things"}},
    {"id": "three", "kind": "support", "payload": {"text": THREE_ASKS}},
    {"id": "one", "kind": "support", "payload": {"text": ONE_ASK}},
]
EXPECTED = {
    "two": ["billing_refunds", "shipping_returns"],
    "three": ["account_access", "technical_issues", "shipping_returns"],
}


def _children(runtime, parent):
    with transaction(runtime.sessions) as session:
        rows = session.execute(select(Job).where(Job.parent_id == parent)).scalars().all()
        return sorted(rows, key=lambda job: job.meta["part"])


def _results_per_job(runtime):
    with transaction(runtime.sessions) as session:
        rows = session.execute(select(Result.job_id, func.count()).group_by(Result.job_id)).all()
    return dict(rows)


def _last_attempt(runtime, job_id):
    with transaction(runtime.sessions) as session:
        query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number.desc()).limit(1)
        return session.execute(query).scalar_one()


def _result(runtime, job_id):
    with transaction(runtime.sessions) as session:
        return session.execute(select(Result).where(Result.job_id == job_id)).scalar_one()


def test_a_multi_ask_ticket_is_split_routed_to_specialists_merged_and_explained(env, make_app, tmp_path):
    app, runtime = make_app()
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", JOBS))
        wait_terminal(runtime, report.batch_id, timeout_s=120)
    assert _children(runtime, "one") == [], "a ticket that asks one thing is not split"
    per_job = _results_per_job(runtime)
    for parent, specialists in EXPECTED.items():
        children = _children(runtime, parent)
        assert [child.id for child in children] == [f"{parent}~{n + 1}" for n in range(len(specialists))]
        routed = [_last_attempt(runtime, child.id).decision["specialist"] for child in children]
        assert routed == specialists, f"each ask of {parent} goes to its own specialist"
        assert all(child.state in ("succeeded", "needs_review", "failed") for child in children)
        assert all(child.payload.get("subject") is None for child in children), "the subject is the parent's"
        with transaction(runtime.sessions) as session:
            state = session.execute(select(Job.state).where(Job.id == parent)).scalar_one()
        # the parent is judged whole: accepted only when every part was
        every = all(child.state == "succeeded" for child in children)
        assert state == ("succeeded" if every else "needs_review")
        merged = _result(runtime, parent).output
        assert [part["job_id"] for part in merged["parts"]] == [child.id for child in children]
        for child in children:
            reply = _result(runtime, child.id).output.get("reply")
            if child.state == "succeeded":
                assert reply and reply in merged["reply"], "each child's answer is a section of the merge"
        assert all(per_job[job.id] == 1 for job in children) and per_job[parent] == 1
    assert per_job["one"] == 1

    lines = run(env, "results", report.batch_id, check=True).stdout.strip().split("\n")
    rows = [json.loads(line) for line in lines]
    order = [(row["job_id"], row["parent"]) for row in rows]
    assert order[:4] == [("one", None), ("three", None), ("three~1", "three"), ("three~2", "three")]
    status = run(env, "status", report.batch_id, check=True).stdout
    assert "3 jobs" in status and "children" in status

    explained = run(env, "explain", "two", check=True).stdout
    assert "split by rules into 2 asks" in explained
    assert "two~1" in explained and "billing_refunds" in explained and "shipping_returns" in explained
    assert "(merge," in explained and ("merged 2 parts" in explained or "ended" in explained)
    child = run(env, "explain", "two~2", check=True).stdout
    assert "child of two" in child


def test_a_redelivered_child_and_a_second_merge_write_nothing_twice(make_app, tmp_path):
    app, runtime = make_app()
    jobs = [{"id": "pair", "kind": "support", "payload": {"text": TWO_ASKS}}]
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id, timeout_s=120)
        before = _result(runtime, "pair")
        children = _children(runtime, "pair")
        # every message of the children delivered once more: classify, run_job, the callback
        for child in children:
            app.send_task("tierflow.classify", args=(child.id,), queue="classify")
            attempt = _last_attempt(runtime, child.id)
            app.send_task("tierflow.run_job", args=(child.id, attempt.number), queue=f"tier.{attempt.tier}")
            assert finish_attempt(app, child.id, attempt.number, None, {}) is None, "already judged"
        app.send_task("tierflow.run_job", args=("pair", 1), queue="tier.small")
        app.send_task("tierflow.reconcile", queue="maintenance")
        wait_terminal(runtime, report.batch_id, timeout_s=30)
        with transaction(runtime.sessions) as session:
            assert ready_parents(session, 10) == []
            assert merge_parent(session, runtime, "pair") == [], "a merged parent merges nothing again"
    after = _result(runtime, "pair")
    assert (after.id, after.output) == (before.id, before.output)
    assert Counter(_results_per_job(runtime).values()) == Counter({1: 3})


MERGE_KIND = """
[[kind]]
name = "asks"
description = "Questions a customer sends in one message, answered in one reply."
text = "{text}"
chat_field = "text"

[kind.payload]
type = "object"
required = ["text"]

[kind.payload.properties.text]
type = "string"
minLength = 1

[[kind.expert]]
name = "answerer"
type = "model"
instruction = "Answer the customer's question."
prompt = "{text}"

[kind.expert.answer]
required = ["reply"]

[kind.expert.answer.properties.reply]
type = "string"
minLength = 1

[[kind.expert]]
name = "writer"
type = "model"
when = "merge"
instruction = "Write one reply to the customer from the answers to each of their questions."
prompt = "The customer wrote: {text}\\nThe answers:\\n{parts}"

[kind.expert.answer]
required = ["reply"]

[kind.expert.answer.properties.reply]
type = "string"
minLength = 1

[kind.decompose]
merge = "writer"
max_subtasks = 3
"""


def test_a_declared_model_merge_writes_one_reply_from_the_parts(make_app, tmp_path):
    (tmp_path / "asks.toml").write_text(MERGE_KIND)
    app, runtime = make_app(kinds=[str(tmp_path / "asks.toml")])
    text = "What are your opening hours on Sunday? Also, do you ship to Norway? Also, can I pay by invoice?"
    jobs = [{"id": "q", "kind": "asks", "payload": {"text": text}}]
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id, timeout_s=120)
    children = _children(runtime, "q")
    assert len(children) == 3
    merge = _last_attempt(runtime, "q")
    assert (merge.number, merge.decision["strategy"], merge.decision["experts"]) == (1, "merge", ["writer"])
    with transaction(runtime.sessions) as session:
        writer = session.execute(
            select(ExpertResult).where(ExpertResult.job_id == "q", ExpertResult.expert == "writer")
        ).scalar_one()
    assert writer.model and writer.cost_usd > 0, "the merge is a model call"
    assert _result(runtime, "q").output["reply"]
    assert Counter(_results_per_job(runtime).values()) == Counter({1: 4})
