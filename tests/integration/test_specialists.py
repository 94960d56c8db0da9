"""Specialists by intent through a real worker: a refund ticket and a crash ticket go to different
specialists, each retrieves from its own part of the knowledge base, and `tierflow explain`
shows the specialist, the intent and the stage that decided."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.integration.conftest import run, running_worker, wait_terminal, write_jobs
from tierflow.routing.policy import Policy
from tierflow.store.db import transaction
from tierflow.store.knowledge import load_articles, read_articles, search_postgres
from tierflow.store.models import Attempt, ExpertResult, Job
from tierflow.store.policies import publish_policy
from tierflow.tasks.runtime import default_policy
from tierflow.tasks.submission import submit_file

KB = Path(__file__).resolve().parents[2] / "examples" / "kb"
SECTION = {article.id: article.section for article in read_articles(KB)}

# The refund ticket mentions an app and a return: unscoped, articles of other sections match it too.
REFUND = "Please refund my order NW-4410: the app crashed during payment and I was charged twice."
CRASH = "The app crashes with an error every time I open my basket on Android. Reinstalling did not help."
WARRANTY = "The zip on my tent failed after two trips. Is that covered by the warranty?"
# Sure enough for the policy's usual bar on small, not for the billing specialist's stricter check.
LATE_REFUND = (
    "I returned the blue rain jacket two weeks ago, however the money has still not reached my card. "
    "The tracking shows your warehouse received the parcel last Monday. Could you refund it to my "
    "original card please? Thanks, Ana"
)
JOBS = [
    {"id": "refund-1", "kind": "support", "payload": {"text": REFUND}},
    {"id": "refund-2", "kind": "support", "payload": {"text": LATE_REFUND}},
    {"id": "crash-1", "kind": "support", "payload": {"text": CRASH}},
    {"id": "zip-1", "kind": "support", "payload": {"text": WARRANTY}},
]


def _attempts(runtime, job_id):
    with transaction(runtime.sessions) as session:
        query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)
        return session.execute(query).scalars().all()


def _retrieved(runtime, job_id):
    """The sections of the articles the job's retriever found, over all its attempts."""
    with transaction(runtime.sessions) as session:
        query = select(ExpertResult).where(ExpertResult.job_id == job_id, ExpertResult.expert == "retriever")
        rows = session.execute(query).scalars().all()
    assert rows, f"{job_id} ran its retriever"
    return {SECTION[article["id"]] for row in rows for article in row.output["articles"]}


def test_a_refund_and_a_crash_go_to_their_own_specialists_and_knowledge(env, make_app, tmp_path):
    app, runtime = make_app()
    with transaction(runtime.sessions) as session:
        load_articles(session, read_articles(KB))
        unscoped = {hit.article_id for hit in search_postgres(session, REFUND, 3)}
    outside = {SECTION[article] for article in unscoped} - {"billing"}
    assert outside, "without its scope the refund ticket would see articles of other sections"
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", JOBS)), "--wait", check=True)
    expected = {
        "refund-1": ("billing_refunds", "refund", {"billing"}),
        "refund-2": ("billing_refunds", "refund", {"billing"}),
        "crash-1": ("technical_issues", "technical", {"technical"}),
        "zip-1": ("general_support", "general", None),
    }
    for job_id, (specialist, intent, sections) in expected.items():
        attempts = _attempts(runtime, job_id)
        assert attempts and all(a.state == "judged" for a in attempts)
        chosen = {(a.decision["specialist"], a.decision["intent"], a.decision["stage"]) for a in attempts}
        assert chosen == {(specialist, intent, "rules")}, f"every attempt of {job_id}, escalated ones too"
        if sections is not None:
            assert _retrieved(runtime, job_id) == sections
    assert "" in _retrieved(runtime, "zip-1"), "the general specialist sees the articles of no section"
    first, second = _attempts(runtime, "refund-2")
    assert (first.tier, first.verdict, second.tier, second.verdict) == (
        "small",
        "escalate",
        "medium",
        "accept",
    )
    assert any("below 0.80" in reason for reason in first.reasons["reasons"]), first.reasons
    shown = run(env, "explain", "refund-1", check=True).stdout
    assert "specialist billing_refunds: intent refund, decided by the rules stage" in shown
    assert "intent refund (rules) selects the specialist billing_refunds" in shown
    crash = json.loads(run(env, "explain", "crash-1", "--json", check=True).stdout)
    assert crash["attempts"][0]["decision"]["specialist"] == "technical_issues"
    shown = run(env, "explain", "crash-1", check=True).stdout
    assert "specialist technical_issues: intent technical, decided by the rules stage" in shown


ROUTES = Path(__file__).resolve().parents[2] / "examples" / "routes" / "support_intents.jsonl"


def test_the_semantic_stage_routes_to_a_specialist_and_an_out_of_scope_job_to_the_general_one(
    make_app, tmp_path
):
    if os.environ.get("CI", "").lower() != "true":  # under CI the embeddings extra must be there
        pytest.importorskip("sentence_transformers")
    app, runtime = make_app(semantic_routes=ROUTES, embeddings_cache_dir=tmp_path / "cache")
    with transaction(runtime.sessions) as session:
        base: Policy = default_policy(runtime.settings)
        publish_policy(session, base.model_copy(update={"rules_confidence": 0.99}), "test: semantic stage")
    jobs = [
        {
            "id": "swap-1",
            "kind": "support",
            "payload": {"text": "Where do I drop off the return for my boots?"},
        },
        {"id": "far-1", "kind": "support", "payload": {"text": "What will the weather be like in Lisbon?"}},
    ]
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id, timeout_s=180)
    swap = _attempts(runtime, "swap-1")[0]
    assert (swap.decision["specialist"], swap.decision["intent"], swap.decision["stage"]) == (
        "shipping_returns",
        "returns",
        "semantic",
    )
    far = _attempts(runtime, "far-1")[0]
    assert (far.decision["specialist"], far.decision["stage"]) == ("general_support", "semantic")
    assert "out of scope" in far.decision["reasons"][0]
    with transaction(runtime.sessions) as session:
        analysis = session.get(Job, "far-1").analysis
    assert analysis["out_of_scope"] is True and analysis["stage"] == "rules"
