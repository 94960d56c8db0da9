"""The knowledge base in PostgreSQL (full-text search) and the support retriever in the pipeline."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.store.db import transaction
from tierflow.store.knowledge import load_articles, read_articles, search_postgres
from tierflow.store.models import ExpertResult
from tierflow.tasks.submission import submit_file

KB = Path(__file__).resolve().parents[2] / "examples" / "kb"


def test_postgres_full_text_search_finds_the_policy_and_a_reload_replaces(make_app):
    _, runtime = make_app()
    with transaction(runtime.sessions) as session:
        assert load_articles(session, read_articles(KB)) == len(list(KB.rglob("*.md")))
        load_articles(session, read_articles(KB))  # idempotent
    with transaction(runtime.sessions) as session:
        hits = search_postgres(session, "my parcel has not moved and the tracking shows nothing", 2)
        none = search_postgres(session, "zebra", 2)
    assert hits[0].article_id == "shipping" and hits[0].score > 0 and none == []


def test_support_jobs_are_grounded_in_the_retrieved_policy(make_app, tmp_path):
    app, runtime = make_app()
    with transaction(runtime.sessions) as session:
        load_articles(session, read_articles(KB))
    job = {"id": "kb-1", "kind": "support", "payload": {"text": "I forgot my password and cannot log in."}}
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", [job]))
        wait_terminal(runtime, report.batch_id)
    with transaction(runtime.sessions) as session:
        rows = {r.expert: r for r in session.execute(select(ExpertResult)).scalars()}
    assert rows["retriever"].output["articles"][0]["id"] == "account"
    assert rows["drafter"].error is None and rows["drafter"].input_tokens > 150, "the policy is in the prompt"
