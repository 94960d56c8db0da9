"""Declared kinds on the real PostgreSQL, Redis and a real Celery worker.

The example kinds files (examples/kinds/) are declared through the settings; their
jobs go through classify, a tier, the chord of their experts, the verdict and the
result like a built-in kind's, and reflect learns a scorer for them.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.integration.conftest import run, running_worker, wait_terminal, write_jobs
from tierflow.routing.learning import LearnedRouting
from tierflow.routing.scorers import CHEAP_FEATURES, constant_scorer
from tierflow.routing.states import Tier
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, ExpertResult, Job, Result, utcnow
from tierflow.store.policies import publish_policy
from tierflow.store.trace import job_trace
from tierflow.tasks.reflect import run_reflect
from tierflow.tasks.submission import submit_file
from tierflow.worker.cli_explain import limits_line

KINDS = Path(__file__).resolve().parents[2] / "examples" / "kinds"
CONTRACT = KINDS / "contract_clauses.toml"
EMAIL = KINDS / "email_triage.toml"
NO_EXPLORING = {"explore_share": 0}


def _contract(job_id: str, notice: str, extra: str = "") -> dict[str, object]:
    text = (
        f"This agreement is made on 2026-02-01 between Northwind Traders Ltd and Bluefin Analytics LLC. "
        f"Either party may terminate it on {notice} notice.{extra}"
    )
    return {"id": job_id, "kind": "contract_clauses", "payload": {"title": "Services", "text": text}}


def _rows(runtime, model, job_id):  # type: ignore[no-untyped-def]
    with transaction(runtime.sessions) as session:
        return session.execute(select(model).where(model.job_id == job_id)).scalars().all()


def _job(runtime, job_id):  # type: ignore[no-untyped-def]
    with transaction(runtime.sessions) as session:
        return session.get(Job, job_id)


def test_a_declared_kind_flows_through_every_stage_and_a_failed_check_escalates(make_app, tmp_path):
    app, runtime = make_app(kinds=[str(CONTRACT)], learning=NO_EXPLORING)
    jobs = [_contract("days", "30 days"), _contract("months", "three months")]
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        assert report.accepted == 2 and not report.rejected
        wait_terminal(runtime, report.batch_id, timeout_s=120)
    (result,) = _rows(runtime, Result, "days")
    assert _job(runtime, "days").state == "succeeded" and result.verdict == "accept"
    assert result.output["notice_period_days"] == 30
    assert result.output["parties"] == ["Northwind Traders Ltd", "Bluefin Analytics LLC"]
    (attempt,) = _rows(runtime, Attempt, "days")
    assert attempt.tier == "small" and attempt.queue == "tier.small" and attempt.state == "judged"
    assert {e.expert for e in _rows(runtime, ExpertResult, "days")} == {
        "clause_reader",
        "notice_rule",
        "date_rule",
    }
    # the small model reads "three months" as 3 days, the rule as 90: the agree check escalates
    first, second = sorted(_rows(runtime, Attempt, "months"), key=lambda a: a.number)
    assert (first.tier, first.verdict) == ("small", "escalate")
    assert "clause_reader and notice_rule disagree: 3 vs 90" in first.reasons["reasons"]
    assert second.tier == "medium" and second.verdict == "accept"
    (months,) = _rows(runtime, Result, "months")
    assert months.output["notice_period_days"] == 90


def test_review_rules_hold_for_review_and_bad_payloads_are_refused_by_line(make_app, tmp_path):
    app, runtime = make_app(kinds=[str(CONTRACT), str(EMAIL)], learning=NO_EXPLORING)
    jobs = [
        _contract("liable", "30 days", " The supplier shall indemnify the customer."),
        {
            "id": "threat",
            "kind": "email_triage",
            "payload": {
                "sender": "x@y.example",
                "subject": "Billing",
                "body": "My lawyer will call about the invoice.",
            },
        },
    ]
    bad = write_jobs(tmp_path / "bad.jsonl", [jobs[1], {"kind": "email_triage", "payload": {"sender": "x"}}])
    refused = submit_file(app, runtime, bad)
    assert refused.batch_id is None
    assert [(i.line, i.field) for i in refused.rejected] == [(2, "payload")]
    assert "'subject' is a required property" in refused.rejected[0].reason
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id, timeout_s=120)
    for job_id, reason in (("liable", "liability clause: indemnify"), ("threat", "legal words: lawyer")):
        assert _job(runtime, job_id).state == "needs_review"
        (attempt,) = _rows(runtime, Attempt, job_id)
        assert reason in attempt.reasons["reasons"]


def test_a_job_of_a_kind_no_longer_declared_fails_saying_so(make_app, tmp_path):
    declared, runtime = make_app(kinds=[str(CONTRACT)])
    report = submit_file(
        declared, runtime, write_jobs(tmp_path / "jobs.jsonl", [_contract("gone", "30 days")])
    )
    assert report.accepted == 1
    app, plain = make_app()  # the same database, the kinds file no longer declared
    with running_worker(app):
        wait_terminal(plain, report.batch_id, timeout_s=60)
    job = _job(plain, "gone")
    (result,) = _rows(plain, Result, "gone")
    assert job.state == "failed" and result.verdict == "fail"
    assert "kind 'contract_clauses' is not declared" in job.error


def test_reflect_learns_the_new_kind_and_leaves_the_built_in_scorers_unchanged(make_app, tmp_path):
    learning = {"min_samples": 6, "min_version_samples": 6, "max_share_step": 0.6, "explore_share": 0}
    app, runtime = make_app(kinds=[str(CONTRACT)], learning=learning, policy_ttl_s=0)
    width = len(CHEAP_FEATURES)
    prompt = LearnedRouting(
        encoder=None,
        tiers={Tier.SMALL: constant_scorer(width, 8, 10), Tier.LARGE: constant_scorer(width, 9, 10)},
        gain_threshold=0.5,
    )
    with transaction(runtime.sessions) as session:
        seeded = runtime.policy().model_copy(update={"learned": {"prompt": prompt}})
        publish_policy(session, seeded, "a learned prompt scorer")
    runtime.forget_policy()
    jobs = [_contract(f"d{n}", f"{10 + n} days") for n in range(8)]
    jobs += [_contract(f"m{n}", f"{['two', 'three', 'four', 'six'][n % 4]} months") for n in range(8)]
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id, timeout_s=180)
    done = run_reflect(runtime)
    assert done.published is not None, done.text
    learned = runtime.policy().learned
    assert learned["prompt"] == prompt, "the built-in kind's scorers are as they were"
    contract = learned["contract_clauses"]
    assert set(contract.tiers) == {Tier.SMALL, Tier.MEDIUM}
    assert all(scorer.width == width for scorer in contract.tiers.values())


def test_a_worker_refuses_to_start_on_a_bad_kinds_file_with_the_checks_messages(env, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(CONTRACT.read_text().replace('type = "agree"', 'type = "agreeish"'), encoding="utf-8")
    checked = run(env, "kinds", "check", str(bad))
    assert checked.returncode == 2
    line = next(line for line in checked.stderr.splitlines() if "unknown check" in line)
    assert line.startswith(f"{bad}:") and ": kind[0].check[2].type: unknown check 'agreeish'" in line
    refused = run({**env, "TIERFLOW_KINDS": str(bad)}, "worker", "--tier", "small")
    assert refused.returncode == 2 and line in refused.stderr
    listed = run({**env, "TIERFLOW_KINDS": str(CONTRACT)}, "kinds", "list", check=True).stdout
    assert "contract_clauses (declared)" in listed and "expert notice_rule: rule rule period" in listed


ROUTES = Path(__file__).resolve().parents[2] / "examples" / "routes" / "support_intents.jsonl"
BUCKLE = "The buckle on my rucksack snapped on the first hike."
HELPDESK = """\
[[kind]]
name = "helpdesk"
text = "{text}"

[kind.payload]
type = "object"
required = ["text"]
properties = { text = { type = "string" } }

[[kind.expert]]
name = "sorter"
type = "model"
prompt = "{text}"

[kind.expert.answer]
required = ["queue"]
properties = { queue = { type = "string", enum = ["returns", "repairs", "other"] } }

[kind.routing]
budget_usd = 0.000001
deadline_s = 3600
semantic_routes = "routes.jsonl"
"""


def test_a_kinds_budget_deadline_and_semantic_routes_apply_to_its_jobs(make_app, tmp_path):
    if os.environ.get("CI", "").lower() != "true":  # under CI the embeddings extra must be there
        pytest.importorskip("sentence_transformers")
    (tmp_path / "routes.jsonl").write_bytes(ROUTES.read_bytes())
    (tmp_path / "helpdesk.toml").write_text(HELPDESK)
    kinds = [str(tmp_path / "helpdesk.toml")]
    app, runtime = make_app(kinds=kinds, learning=NO_EXPLORING, embeddings_cache_dir=tmp_path / "cache")
    with transaction(runtime.sessions) as session:
        publish_policy(session, runtime.policy().model_copy(update={"rules_confidence": 0.99}), "test")
    runtime.forget_policy()
    jobs = [
        {"id": "hd-default", "kind": "helpdesk", "payload": {"text": BUCKLE}},
        {"id": "hd-own", "kind": "helpdesk", "payload": {"text": BUCKLE}, "metadata": {"budget_usd": 1}},
        {"id": "builtin", "kind": "support", "payload": {"text": BUCKLE}},
    ]
    before = utcnow()
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id, timeout_s=180)
    default, own, builtin = (_job(runtime, job_id) for job_id in ("hd-default", "hd-own", "builtin"))
    assert default.meta["budget_usd"] == 0.000001 and own.meta["budget_usd"] == 1
    due = datetime.fromisoformat(default.meta["deadline"])
    assert before + timedelta(seconds=3600) <= due <= utcnow() + timedelta(seconds=3600)
    # the kind's routes file decides its jobs' intent; no routes file is set for the built-in kind
    assert (default.analysis["stage"], default.analysis["intent"]) == ("semantic", "warranty")
    assert builtin.analysis["stage"] == "rules"
    # the default budget is below any tier's price: the job waits for a person, saying why
    assert default.state == "needs_review" and own.state == "succeeded"
    (attempt,) = _rows(runtime, Attempt, "hd-default")
    assert "no tier fits the job's constraints" in attempt.decision["reasons"]
    with transaction(runtime.sessions) as session:
        trace = job_trace(session, "hd-default")
    assert trace is not None and trace["metadata"]["budget_usd"] == 0.000001
    assert limits_line(trace["metadata"]) == f"limits: budget $0.000001, deadline {default.meta['deadline']}"
