"""The LLM analysis stage through the real pipeline, and the analysis cache per content hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.routing.policy import Policy
from tierflow.store.db import transaction
from tierflow.store.models import ExpertResult, Job
from tierflow.store.policies import publish_policy
from tierflow.tasks.runtime import default_policy
from tierflow.tasks.submission import submit_file

TEXT = "Our webhook integration drops events since Tuesday; can you check?"


def test_unsure_rules_ask_the_llm_once_and_a_resubmitted_content_reuses_the_analysis(make_app, tmp_path):
    app, runtime = make_app()
    with transaction(runtime.sessions) as session:
        base: Policy = default_policy(runtime.settings)
        publish_policy(
            session,
            base.model_copy(update={"rules_confidence": 0.99, "llm_analysis": True}),
            "test: ask the LLM stage",
        )
    with running_worker(app):
        first = submit_file(
            app,
            runtime,
            write_jobs(tmp_path / "a.jsonl", [{"id": "an-1", "kind": "support", "payload": {"text": TEXT}}]),
        )
        wait_terminal(runtime, first.batch_id)
        second = submit_file(
            app,
            runtime,
            write_jobs(tmp_path / "b.jsonl", [{"id": "an-2", "kind": "support", "payload": {"text": TEXT}}]),
        )
        wait_terminal(runtime, second.batch_id)
    with transaction(runtime.sessions) as session:
        jobs = {j.id: j for j in session.execute(select(Job)).scalars()}
        analysis_calls = (
            session.execute(
                select(ExpertResult).where(ExpertResult.attempt == 0, ExpertResult.expert == "analysis")
            )
            .scalars()
            .all()
        )
    assert jobs["an-1"].analysis["stage"] == "llm" and jobs["an-1"].analysis["cached"] is False
    assert jobs["an-2"].analysis["stage"] == "llm" and jobs["an-2"].analysis["cached"] is True
    assert [row.job_id for row in analysis_calls] == ["an-1"], "the second job's analysis cost nothing"
    assert analysis_calls[0].cost_usd > 0 and analysis_calls[0].calls[0]["outcome"] == "ok"
    assert jobs["an-1"].state == jobs["an-2"].state == "succeeded"


ROUTES = Path(__file__).resolve().parents[2] / "examples" / "routes" / "support_intents.jsonl"


def test_semantic_stage_decides_when_the_rules_are_unsure(make_app, tmp_path):
    if os.environ.get("CI", "").lower() != "true":  # under CI the embeddings extra must be there
        pytest.importorskip("sentence_transformers")
    app, runtime = make_app(semantic_routes=ROUTES, embeddings_cache_dir=tmp_path / "cache")
    with transaction(runtime.sessions) as session:
        base: Policy = default_policy(runtime.settings)
        publish_policy(session, base.model_copy(update={"rules_confidence": 0.99}), "test: semantic stage")
    jobs = [
        {
            "id": "sem-1",
            "kind": "support",
            "payload": {"text": "The buckle on my rucksack snapped on the first hike."},
        },
        {
            "id": "sem-2",
            "kind": "support",
            "payload": {"text": "What will the weather be like in Lisbon tomorrow?"},
        },
    ]
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id, timeout_s=180)
    with transaction(runtime.sessions) as session:
        analyses = {j.id: j.analysis for j in session.execute(select(Job)).scalars()}
    assert (analyses["sem-1"]["stage"], analyses["sem-1"]["intent"]) == ("semantic", "warranty")
    assert analyses["sem-2"]["stage"] == "rules"
    assert any(reason.startswith("semantic unsure") for reason in analyses["sem-2"]["reasons"])
    assert any((tmp_path / "cache").rglob("*.npy")), "route examples are embedded once, on disk"
