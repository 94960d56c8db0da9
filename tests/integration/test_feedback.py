"""Feedback, review and policy versions through the `tierflow` command, on the real services."""

from __future__ import annotations

import json

from sqlalchemy import select

from tests.integration.conftest import run, running_worker, write_jobs
from tierflow.store.db import transaction
from tierflow.store.models import Feedback, Job, PolicyVersion
from tierflow.store.policies import publish_policy
from tierflow.tasks.runtime import default_policy

JOBS = [
    {"id": "fb-ok", "kind": "prompt", "payload": {"prompt": "What is 6 * 7?"}},
    {
        "id": "fb-held",
        "kind": "support",
        "payload": {"text": "Refund me now or my lawyer takes legal action."},
    },
    {"id": "fb-sum", "kind": "prompt", "payload": {"prompt": "What is 5 + 4?"}},
    {"id": "fb-square", "kind": "prompt", "payload": {"prompt": "What is 3 * 3?"}},
]


def _feedback(runtime, job_id):  # type: ignore[no-untyped-def]
    with transaction(runtime.sessions) as session:
        rows = session.execute(
            select(Feedback).where(Feedback.job_id == job_id).order_by(Feedback.id)
        ).scalars()
        return [(f.source, f.correct, f.score, f.note) for f in rows]


def test_review_lists_held_jobs_and_records_a_persons_decision(env, make_app, tmp_path):
    app, runtime = make_app()
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", JOBS)), "--wait", check=True)
    listing = run(env, "review", check=True).stdout
    assert "fb-held" in listing and "fb-ok" not in listing and "policy flags" in listing
    run(env, "review", "--decide", "fb-held", "--accept", "--note", "checked with legal", check=True)
    with transaction(runtime.sessions) as session:
        assert session.get(Job, "fb-held").state == "succeeded"
    assert _feedback(runtime, "fb-held")[-1] == ("review", True, None, "checked with legal")
    again = run(env, "review", "--decide", "fb-held", "--reject")
    assert again.returncode == 2 and "is not held for review" in again.stderr


def test_people_and_gold_labels_give_feedback_all_or_nothing(env, make_app, tmp_path):
    app, runtime = make_app()
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", JOBS)), "--wait", check=True)
    run(env, "feedback", "fb-ok", "--incorrect", "--note", "42 is right but badly worded", check=True)
    run(env, "feedback", "fb-ok", "--rating", "4", check=True)
    assert _feedback(runtime, "fb-ok")[-2:] == [
        ("human", False, None, "42 is right but badly worded"),
        ("human", None, 0.75, None),
    ]
    assert run(env, "feedback", "fb-ok").returncode == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"job_id": "fb-ok", "correct": True})
        + "\n"
        + json.dumps({"job_id": "nope", "correct": True})
        + "\n"
    )
    refused = run(env, "feedback", "--labels", str(bad))
    assert refused.returncode == 2 and refused.stderr.strip() == f"error: {bad}:2: job_id: no job 'nope'"
    assert [f for f in _feedback(runtime, "fb-ok") if f[0] == "gold"] == []
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"job_id": "fb-ok", "correct": True})
        + "\n"
        + json.dumps({"job_id": "fb-held", "expected": "hold"})
        + "\n"
    )
    run(env, "feedback", "--labels", str(good), check=True)
    run(env, "feedback", "--labels", str(good), check=True)  # one gold label per job
    assert [f[:2] for f in _feedback(runtime, "fb-ok") if f[0] == "gold"] == [("gold", True)]
    held = [f for f in _feedback(runtime, "fb-held") if f[0] == "gold"]
    assert json.loads(held[0][3])["expected"] == "hold" and held[0][1] is False  # its reply is no "hold"
    # a label that gives only the expected output is judged against the job's result
    expected = tmp_path / "expected.jsonl"
    expected.write_text(
        json.dumps({"job_id": "fb-sum", "expected": 9})
        + "\n"
        + json.dumps({"job_id": "fb-square", "expected": "10"})
    )
    run(env, "feedback", "--labels", str(expected), check=True)
    assert [f[:2] for f in _feedback(runtime, "fb-sum") if f[0] == "gold"] == [("gold", True)]
    assert [f[:2] for f in _feedback(runtime, "fb-square") if f[0] == "gold"] == [("gold", False)]


def test_policy_history_diff_and_rollback(env, make_app):
    _, runtime = make_app()
    with transaction(runtime.sessions) as session:
        base = runtime.policy()
        publish_policy(session, base.model_copy(update={"accept_quality": 0.8}), "stricter acceptance")
    assert "stricter acceptance" in run(env, "policy", "history", check=True).stdout
    assert run(env, "policy", "diff", "1", "2", check=True).stdout.strip() == "accept_quality: 0.7 -> 0.8"
    assert (
        "version 3 is active: the policy of version 1"
        in run(env, "policy", "rollback", "1", check=True).stdout
    )
    shown = json.loads(run(env, "policy", "show", check=True).stdout)
    assert (shown["version"], shown["accept_quality"]) == (3, 0.7)
    with transaction(runtime.sessions) as session:
        rows = {v.version: (v.parent, v.active) for v in session.execute(select(PolicyVersion)).scalars()}
    assert rows == {1: (None, False), 2: (1, False), 3: (2, True)}
    missing = run(env, "policy", "diff", "1", "9")
    assert missing.returncode == 2 and "no policy version 9" in missing.stderr
    assert default_policy(runtime.settings).version == 1
