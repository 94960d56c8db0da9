"""Declared kinds on the real PostgreSQL, Redis and a real Celery worker.

The example kinds files (examples/kinds/) are declared through the settings; their
jobs go through classify, a tier, the chord of their experts, the verdict and the
result like a built-in kind's, and reflect learns a scorer for them.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from tests.integration.conftest import run, running_worker, wait_terminal, write_jobs
from tierflow.routing.learning import LearnedRouting
from tierflow.routing.scorers import CHEAP_FEATURES, constant_scorer
from tierflow.routing.states import Tier
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, ExpertResult, Job, Result
from tierflow.store.policies import publish_policy
from tierflow.tasks.reflect import run_reflect
from tierflow.tasks.submission import submit_file

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
