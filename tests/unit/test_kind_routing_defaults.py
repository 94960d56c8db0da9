"""A declared kind's routing defaults: budget and deadline at submit, its tier cap, its rules,
its semantic routes file, and the chat field it takes."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tierflow.api.shapes import line_job
from tierflow.routing.analysis import Analysis, analyze_rules
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import decide
from tierflow.routing.errors import KindsRejected
from tierflow.routing.job_lines import read_jobs
from tierflow.routing.jobs import JobMetadata, ParsedJob, parse_lines, with_kind_defaults
from tierflow.routing.kinds.registry import KindRegistry, recorded_prompt_kind
from tierflow.routing.kinds.spec import KindRouting
from tierflow.routing.policy import Policy
from tierflow.routing.states import Tier
from tierflow.worker.kinds import registry_from

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIERS = {
    Tier.SMALL: ("fake:fake-small",),
    Tier.MEDIUM: ("fake:fake-medium",),
    Tier.LARGE: ("fake:fake-large",),
}

KIND_FILE = """\
[[kind]]
name = "claims"
description = "Insurance claims: a category."
text = "{text}"
chat_field = "text"

[kind.payload]
type = "object"
required = ["text"]
properties = { text = { type = "string" } }

[[kind.expert]]
name = "reader"
type = "model"
prompt = "{text}"

[kind.expert.answer]
required = ["category"]
properties = { category = { type = "string", enum = ["auto", "home", "travel"] } }

[kind.routing]
max_tier = "medium"
budget_usd = 0.25
deadline_s = 600
semantic_routes = "claims_routes.jsonl"

[[kind.routing.rules]]
name = "flood"
keywords = ["flood"]
intent = "home"
difficulty = 0.9
confidence = 0.95
"""


def _registry(tmp_path: Path, text: str = KIND_FILE, routes: bool = True) -> KindRegistry:
    if routes:
        (tmp_path / "claims_routes.jsonl").write_text('{"text": "my car was hit", "intent": "auto"}\n')
    path = tmp_path / "claims.toml"
    path.write_text(text)
    return registry_from([path])


def _jobs(registry: KindRegistry, lines: list[dict[str, object]]) -> list[ParsedJob]:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    found = list(read_jobs(io.BytesIO(data), "jobs.jsonl", kinds=registry, submitted_at=NOW))
    assert all(isinstance(item, ParsedJob) for item in found), found
    return [item for item in found if isinstance(item, ParsedJob)]


def test_the_kinds_budget_and_deadline_fill_what_a_job_leaves_out() -> None:
    routing = KindRouting(budget_usd=0.25, deadline_s=600)
    filled = with_kind_defaults(JobMetadata(), routing, NOW)
    assert filled.budget_usd == 0.25 and filled.deadline == NOW + timedelta(seconds=600)
    own = JobMetadata(budget_usd=1.0, deadline=NOW + timedelta(days=1))
    assert with_kind_defaults(own, routing, NOW) == own
    assert with_kind_defaults(JobMetadata(), KindRouting(), NOW) == JobMetadata()


def test_submitted_jobs_are_stored_with_the_defaults_and_keep_the_id_of_what_they_gave(tmp_path) -> None:
    registry = _registry(tmp_path)
    bare, own = _jobs(
        registry,
        [
            {"kind": "claims", "payload": {"text": "a pipe burst"}},
            {"kind": "claims", "payload": {"text": "x"}, "metadata": {"budget_usd": 2}},
        ],
    )
    assert bare.stored_metadata.budget_usd == 0.25
    assert bare.stored_metadata.deadline == NOW + timedelta(seconds=600)
    assert bare.spec.metadata == JobMetadata(), "the id and content hash are those of the line as given"
    assert own.stored_metadata.budget_usd == 2 and own.stored_metadata.deadline is not None
    again = parse_lines([json.dumps({"kind": "claims", "payload": {"text": "a pipe burst"}})], kinds=registry)
    assert again.jobs[0].spec.job_id() == bare.spec.job_id(), "a resubmission later is the same job"
    builtin = _jobs(registry, [{"kind": "prompt", "payload": {"prompt": "2 + 2"}}])[0]
    assert builtin.metadata is None and builtin.stored_metadata == JobMetadata()


def test_the_kinds_tier_cap_and_rules_decide_its_jobs(tmp_path) -> None:
    kind = _registry(tmp_path).get("claims")
    analysis = analyze_rules(kind, {"text": "The flood took the ground floor."})
    assert (analysis.intent, analysis.difficulty, analysis.confidence) == ("home", 0.9, 0.95)
    assert "rule flood matched" in analysis.reasons
    policy = Policy(tier_models=TIERS)
    hard = Analysis("home", "claims", 0.99, 0.0, False, 0.9, "rules")
    decision = decide(kind, hard, policy, DecisionContext(job_id="c1"))
    assert decision.tier is Tier.MEDIUM and "capped at medium for claims jobs" in decision.reasons
    overridden = Policy(tier_models=TIERS, max_tier={"claims": Tier.LARGE})
    assert decide(kind, hard, overridden, DecisionContext(job_id="c1")).tier is Tier.LARGE


def test_the_semantic_routes_file_is_named_from_the_kinds_files_folder(tmp_path) -> None:
    kind = _registry(tmp_path).get("claims")
    assert kind.routing.semantic_routes == str(tmp_path / "claims_routes.jsonl")


def test_a_routes_file_that_is_not_there_is_refused_by_line_and_key(tmp_path) -> None:
    with pytest.raises(KindsRejected) as refused:
        _registry(tmp_path, routes=False)
    (problem,) = refused.value.problems
    line = KIND_FILE.split("\n").index('semantic_routes = "claims_routes.jsonl"') + 1
    assert (problem.line, problem.field) == (line, "kind[0].routing.semantic_routes")
    assert "no such routes file" in problem.reason


def test_a_chat_field_the_payload_lacks_is_refused(tmp_path) -> None:
    with pytest.raises(KindsRejected) as refused:
        _registry(tmp_path, KIND_FILE.replace('chat_field = "text"', 'chat_field = "body"'))
    (problem,) = refused.value.problems
    assert (problem.line, problem.field) == (5, "kind[0].chat_field")


def test_a_batch_api_line_may_name_a_declared_kind_that_takes_chat_messages(tmp_path) -> None:
    registry = _registry(tmp_path)
    line = {
        "custom_id": "c1",
        "url": "/v1/chat/completions",
        "metadata": {"kind": "claims"},
        "body": {"model": "tierflow/auto", "messages": [{"role": "user", "content": "hail on my roof"}]},
    }
    _, job = line_job(line, "oa-1", None, registry)
    assert job["kind"] == "claims" and job["payload"] == {"text": "hail on my roof"}
    with pytest.raises(ValueError, match="metadata.kind: 'claims' is not a kind"):
        line_job(line, "oa-1", None)  # the built-ins alone know no such kind


def test_a_chat_message_becomes_a_recorded_prompt_job_unless_it_names_a_chat_kind(tmp_path) -> None:
    registry = _registry(tmp_path)
    prompt = recorded_prompt_kind()
    assert registry.chat_job("2 + 2") == (prompt.name, {prompt.chat_field: "2 + 2"})
    assert registry.chat_job("hail", "claims") == ("claims", {"text": "hail"})
    with pytest.raises(ValueError, match="not a kind a chat message becomes"):
        registry.chat_job("x", "nothing")
    assert prompt.answer_field in registry.answer_fields()
