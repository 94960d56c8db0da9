"""Sampled judging with a real worker on the real PostgreSQL and Redis: the chosen share only,
the day's budget, `tierflow explain`, and a person's label over the judge's grade."""

from __future__ import annotations

import time

from sqlalchemy import select

from tests.integration.conftest import run, running_worker, write_jobs
from tierflow.routing.grades import GradeSource
from tierflow.routing.judging import answer_text, chosen_for_judging, judge_prompt
from tierflow.store.db import transaction
from tierflow.store.judging import JudgeOutcome, begin_judgement, finish_judgement, spent_on, utc_day
from tierflow.store.models import Feedback, Job, Judgement, Result
from tierflow.store.outcomes import judged_attempts
from tierflow.store.policies import publish_policy
from tierflow.tasks.judging import estimate_usd, judge_job

JOBS = [
    {"id": f"jd-{n}", "kind": "prompt", "payload": {"prompt": f"What is {n} + {n + 3}?"}} for n in range(24)
]


def _publish(runtime, **fields):  # type: ignore[no-untyped-def]
    with transaction(runtime.sessions) as session:
        publish_policy(session, runtime.policy().model_copy(update=fields), "test: sampled judging")
    runtime.forget_policy()


def _accepted(runtime) -> set[str]:  # type: ignore[no-untyped-def]
    with transaction(runtime.sessions) as session:
        return set(session.execute(select(Result.job_id).where(Result.verdict == "accept")).scalars())


def _judgements(runtime, expected: int, timeout_s: float = 60.0) -> dict[str, Judgement]:  # type: ignore[no-untyped-def]
    """The judgements once `expected` of them exist and none is running."""
    deadline = time.monotonic() + timeout_s
    while True:
        with transaction(runtime.sessions) as session:
            rows = {j.job_id: j for j in session.execute(select(Judgement)).scalars()}
            session.expunge_all()
        if len(rows) >= expected and all(j.state != "running" for j in rows.values()):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(rows)} of {expected} judgements after {timeout_s}s")
        time.sleep(0.2)


def _judge_feedback(runtime) -> dict[str, Feedback]:  # type: ignore[no-untyped-def]
    with transaction(runtime.sessions) as session:
        rows = session.execute(select(Feedback).where(Feedback.source == "judge")).scalars().all()
        session.expunge_all()
    return {row.job_id: row for row in rows}


def test_the_judge_grades_the_chosen_share_only_and_never_touches_the_job(env, make_app, tmp_path):
    app, runtime = make_app()
    _publish(runtime, judge_share=0.5, judge_budget_usd=10.0)
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", JOBS)), "--wait", check=True)
        accepted = _accepted(runtime)
        chosen = {job for job in accepted if chosen_for_judging(job, 0.5)}
        judgements = _judgements(runtime, len(chosen))
    assert len(accepted) == len(JOBS) and 0 < len(chosen) < len(accepted)
    assert set(judgements) == chosen and {j.state for j in judgements.values()} == {"graded"}
    feedback = _judge_feedback(runtime)
    assert set(feedback) == chosen
    assert all(f.correct is None and f.score == 1.0 for f in feedback.values())
    with transaction(runtime.sessions) as session:
        tiers = dict(session.execute(select(Result.job_id, Result.tier)).tuples().all())
        assert all(feedback[job].tier == tiers[job] for job in chosen)  # the tier that answered
        for job_id in chosen:
            job = session.get(Job, job_id)
            assert job.state == "succeeded" and job.updated_at <= judgements[job_id].created_at
    one, other = sorted(chosen)[:2]
    assert judge_job(runtime, one).startswith("skipped")  # a redelivery: one grade per job
    with transaction(runtime.sessions) as session:
        rows = session.execute(select(Feedback.id).where(Feedback.job_id == one, Feedback.source == "judge"))
        assert len(rows.all()) == 1
    shown = run(env, "explain", one, check=True).stdout
    assert "judge (fake:fake-large): graded, 10/10" in shown and f"feedback (judge, {tiers[one]})" in shown
    assert "offline: recomputed" in shown
    unchosen = sorted(accepted - chosen)[0]
    assert "judge (" not in run(env, "explain", unchosen, check=True).stdout

    run(env, "feedback", one, "--incorrect", "--note", "the sum is right but the wording is not", check=True)
    with transaction(runtime.sessions) as session:
        records = {r.job_id: r for r in judged_attempts(session)}
    assert records[one].grade is not None and records[one].grade.source is GradeSource.PERSON
    assert not records[one].good and records[one].grade.value == 0.0
    assert records[other].grade is not None and records[other].grade.source is GradeSource.JUDGE
    assert records[other].good and records[other].grade.value == 1.0
    assert records[unchosen].grade is not None and records[unchosen].grade.source is GradeSource.VERDICT


def test_the_judge_stays_within_the_days_budget(env, make_app, tmp_path):
    app, runtime = make_app()
    policy = runtime.policy()
    models = list(policy.tier_models[policy.ladder[-1]])
    estimate = estimate_usd(runtime, models, judge_prompt(JOBS[0]["payload"]["prompt"], "21"))
    budget = 2.5 * estimate
    _publish(runtime, judge_share=1.0, judge_budget_usd=budget)
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", JOBS)), "--wait", check=True)
        judgements = _judgements(runtime, len(_accepted(runtime)))
    states = [j.state for j in judgements.values()]
    graded_cost = sum(j.cost_usd for j in judgements.values())
    assert states.count("graded") >= 2 and states.count("over_budget") >= 1, states
    assert 0 < graded_cost <= budget
    with transaction(runtime.sessions) as session:
        assert abs(spent_on(session, utc_day()) - graded_cost) < 1e-9
    assert set(_judge_feedback(runtime)) == {job for job, j in judgements.items() if j.state == "graded"}
    refused = next(job for job, j in judgements.items() if j.state == "over_budget")
    assert "over_budget, no grade" in run(env, "explain", refused, check=True).stdout


def test_a_judge_answer_that_fails_is_recorded_as_a_failed_grade_never_a_grade(env, make_app, tmp_path):
    app, runtime = make_app()
    with running_worker(app):  # judging off by default: nothing is judged
        run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", JOBS[:2])), "--wait", check=True)
    job_id = JOBS[0]["id"]
    with transaction(runtime.sessions) as session:
        assert session.execute(select(Judgement)).first() is None
        output = session.execute(select(Result.output).where(Result.job_id == job_id)).scalar_one()
        assert answer_text(output)
        assert begin_judgement(session, job_id, 0.01, 1.0)
    failure = JudgeOutcome("fake:fake-large", 0.002, None, "output did not validate after one retry: score")
    with transaction(runtime.sessions) as session:
        assert finish_judgement(session, job_id, failure)
        assert not finish_judgement(session, job_id, failure)  # settled once
        assert not begin_judgement(session, job_id, 0.01, 1.0)
        assert abs(spent_on(session, utc_day()) - 0.002) < 1e-12
    assert _judge_feedback(runtime) == {}
    shown = run(env, "explain", job_id, check=True).stdout
    assert "judge (fake:fake-large): failed, no grade" in shown and "did not validate" in shown


SDK_TIERS = {"small": ["openai:gpt-4o-mini"], "large": ["openai:gpt-4o"]}


def test_the_judge_asks_the_top_tier_through_the_sdk_and_a_failed_call_is_no_grade(env, make_app, tmp_path):
    from tierflow.providers.server import Fault, FaultRule, ProviderServer

    with ProviderServer(port=0, models=["gpt-4o-mini", "gpt-4o"]) as server:
        app, runtime = make_app(
            tiers=SDK_TIERS,
            openai_base_url=server.openai_base_url,
            openai_api_key="sk-test-not-a-secret",
            retry_base_delay_s=0.01,
            retry_max_delay_s=0.02,
        )
        _publish(runtime, judge_share=0.5, judge_budget_usd=10.0)
        jobs = JOBS[:8]
        with running_worker(app):
            run_env = {
                **env,
                "TIERFLOW_TIERS": '{"small": ["openai:gpt-4o-mini"], "large": ["openai:gpt-4o"]}',
            }
            run_env["TIERFLOW_OPENAI_BASE_URL"] = server.openai_base_url
            run(run_env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", jobs)), "--wait", check=True)
            accepted = _accepted(runtime)
            chosen = {job for job in accepted if chosen_for_judging(job, 0.5)}
            judgements = _judgements(runtime, len(chosen))
        assert chosen and set(judgements) == chosen
        assert {(j.state, j.model) for j in judgements.values()} == {("graded", "openai:gpt-4o")}
        assert all(j.cost_usd > 0 and j.reason.startswith("offline:") for j in judgements.values())
        server.set_faults([FaultRule(fault=Fault.SERVER_ERROR, model="gpt-4o")])
        unchosen = sorted(accepted - chosen)[0]
        assert judge_job(runtime, unchosen) == "failed"
    with transaction(runtime.sessions) as session:
        failed = session.get(Judgement, unchosen)
        assert failed.state == "failed" and failed.score is None and "500" in (failed.reason or "")
    assert unchosen not in _judge_feedback(runtime)
