"""reflect on the real PostgreSQL, Redis and Celery: beat runs it, it publishes, classify follows.

The fake small model is unsure of prompts full of qualifications ("however",
"although"), which the built-in rules think easy: they start on small and
escalate. After reflect has learned that from the outcomes, the next such prompts
start above the small tier, while plain prompts stay on small.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

from sqlalchemy import select

from tests.integration.conftest import TIERFLOW, run, running_worker, write_jobs
from tierflow.routing.policy import Policy
from tierflow.routing.scorers import constant_scorer
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, Job, PolicyVersion
from tierflow.store.policies import publish_policy
from tierflow.tasks.reflect import run_reflect

# No exploration: the test counts exact first tiers (b-hedged-63 would explore at the default 5%).
LEARNING = {"min_samples": 8, "min_version_samples": 8, "max_share_step": 0.6, "explore_share": 0}
TOPICS = ("the invoice", "the parcel", "my password", "the report", "the meeting", "the refund", "the order")


def _hedged(n: int) -> str:
    topic = TOPICS[n % len(TOPICS)]
    return (
        f"However you look at {topic} number {n}, although it seems settled, however odd it is, "
        "what should I say about it?"
    )


def _plain(n: int) -> str:
    return f"Please tell me the opening hours of office {n} for {TOPICS[n % len(TOPICS)]}."


def _jobs(prefix: str, start: int, count: int) -> list[dict[str, object]]:
    jobs: list[dict[str, object]] = []
    for n in range(start, start + count):
        jobs.append({"id": f"{prefix}-hedged-{n}", "kind": "prompt", "payload": {"prompt": _hedged(n)}})
        jobs.append({"id": f"{prefix}-plain-{n}", "kind": "prompt", "payload": {"prompt": _plain(n)}})
    return jobs


def _first_tiers(runtime, prefix):  # type: ignore[no-untyped-def]
    with transaction(runtime.sessions) as session:
        rows = session.execute(
            select(Attempt.job_id, Attempt.tier, Attempt.decision).where(
                Attempt.number == 1, Attempt.job_id.startswith(prefix)
            )
        ).all()
    return {job_id: (tier, decision) for job_id, tier, decision in rows}


def _wait_for_version(runtime, version: int, timeout_s: float = 60.0) -> PolicyVersion:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with transaction(runtime.sessions) as session:
            row = session.get(PolicyVersion, version)
            if row is not None:
                session.expunge(row)
                return row
        time.sleep(0.25)
    raise AssertionError(f"no policy version {version} after {timeout_s}s")


def test_reflect_run_by_beat_changes_what_the_next_classify_decides(env, make_app, tmp_path):
    app, runtime = make_app(learning=LEARNING, policy_ttl_s=0)
    assert runtime.policy().version == 1  # seeded with the learning settings above
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "a.jsonl", _jobs("a", 10, 10))), "--wait", check=True)
        before = _first_tiers(runtime, "a-")
        assert {tier for tier, _ in before.values()} == {"small"}  # the rules start every one on small
        beat_env = {**env, "TIERFLOW_REFLECT_INTERVAL_S": "1", "TIERFLOW_RECONCILE_INTERVAL_S": "3600"}
        beat = subprocess.Popen(
            [TIERFLOW, "beat", "--schedule", str(tmp_path / "beat-schedule"), "--loglevel", "WARNING"],
            env=beat_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            learned = _wait_for_version(runtime, 2)
        finally:
            beat.send_signal(signal.SIGTERM)
            beat.wait(timeout=30)
        run(env, "submit", str(write_jobs(tmp_path / "b.jsonl", _jobs("b", 60, 6))), "--wait", check=True)
    assert (learned.parent, learned.reason, learned.active) == (1, "reflect", True)
    assert learned.statistics["tiers"]["prompt"]["small"]["rows"] == 20
    assert learned.statistics["tiers"]["prompt"]["small"]["success_rate"] == 0.5
    assert "prompt: " in learned.reflection and "above small for 50% of jobs" in learned.reflection
    diff = run(env, "policy", "diff", "1", "2", check=True).stdout
    assert diff.startswith("learned.prompt: null -> ") and '"weights": "[10 values]"' in diff, (
        diff
    )  # the cheap features: 10
    after = _first_tiers(runtime, "b-")
    for job_id, (tier, decision) in after.items():
        assert decision["policy_version"] == 2
        assert decision["reasons"][1].startswith("learned scorer starts the job on")
        if "plain" in job_id:
            assert tier == "small", (job_id, decision["reasons"])
    up = [job_id for job_id, (tier, _) in after.items() if "hedged" in job_id and tier != "small"]
    assert len(up) == 6, up  # where the rules started every one of them on small


def test_a_version_that_does_worse_than_its_parent_is_rolled_back(env, make_app, tmp_path):
    app, runtime = make_app(learning=LEARNING, policy_ttl_s=0)
    base = runtime.policy()
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "a.jsonl", _jobs("a", 10, 5))), "--wait", check=True)
        # a version that keeps prompts on small: the hedged ones can no longer escalate and succeed
        with transaction(runtime.sessions) as session:
            capped = Policy.model_validate({**base.model_dump(mode="json"), "max_tier": {"prompt": "small"}})
            publish_policy(session, capped, "cap prompts")
        run(env, "submit", str(write_jobs(tmp_path / "b.jsonl", _jobs("b", 60, 5))), "--wait", check=True)
    done = run_reflect(runtime)
    assert (done.from_version, done.published, done.rolled_back_to) == (2, 3, 1)
    with transaction(runtime.sessions) as session:
        rows = {v.version: v for v in session.execute(select(PolicyVersion)).scalars()}
        assert rows[3].reason == "rollback to version 1" and rows[3].parent == 2 and rows[3].active
        assert rows[3].body["max_tier"] == {} and rows[2].body["max_tier"] == {"prompt": "small"}
        assert "rolling back to version 1" in rows[3].reflection
        assert rows[3].statistics["parent"]["version"] == 1
    shown = run(env, "policy", "history", check=True).stdout
    assert "rollback to version 1" in shown and "rolling back to version 1" in shown
    assert json.loads(run(env, "policy", "show", check=True).stdout)["version"] == 3
    stats = json.loads(run(env, "policy", "stats", "3", check=True).stdout)
    assert (stats["version"], stats["parent"], stats["reason"]) == (3, 2, "rollback to version 1")
    assert stats["statistics"]["parent"] == {"version": 1, "jobs": 10, "success_rate": 1.0}
    assert stats["statistics"]["version"] == {"jobs": 10, "success_rate": 0.5}
    assert (
        run(env, "policy", "diff", "2", "3", check=True).stdout.strip() == 'max_tier.prompt: "small" -> null'
    )
    again = json.loads(run(env, "reflect", "--json", check=True).stdout)
    assert again["from_version"] == 3 and again["rolled_back_to"] is None


def test_the_coach_proposes_reflect_bounds_and_the_version_records_it(env, make_app, tmp_path):
    # the small fake model overreaches (a step of 0.2): the review cuts it to 0.1
    app, runtime = make_app(learning={**LEARNING, "coach_model": "fake:fake-small"}, policy_ttl_s=0)
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "a.jsonl", _jobs("a", 10, 10))), "--wait", check=True)
    done = run_reflect(runtime)
    assert done.published == 2
    with transaction(runtime.sessions) as session:
        version = session.get(PolicyVersion, 2)
        coach = version.statistics["coach"]
        assert coach["model"] == "fake:fake-small" and coach["cost_usd"] > 0
        assert coach["changes"] == [
            {
                "field": "small_max_difficulty",
                "proposed": 0.15,
                "why": "10 of 20 recent failures were on the small tier",
                "from": 0.35,
                "to": 0.25,
                "outcome": "applied, bounded to 0.250 (step 0.1)",
            }
        ]
        assert version.body["small_max_difficulty"] == 0.25
        assert "Applied: small_max_difficulty 0.35 -> 0.25." in version.reflection


def test_with_the_local_encoder_the_scorers_see_the_prompt_embedding(env, make_app, tmp_path):
    app, runtime = make_app(learning={**LEARNING, "encoder": "local"}, policy_ttl_s=0)
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "a.jsonl", _jobs("a", 10, 10))), "--wait", check=True)
        done = run_reflect(runtime)
        assert done.published == 2
        run(env, "submit", str(write_jobs(tmp_path / "b.jsonl", _jobs("b", 60, 3))), "--wait", check=True)
    learned = runtime.policy().learned["prompt"]  # type: ignore[index]
    assert learned.encoder == "local" and learned.tiers["small"].width == 10 + 384  # type: ignore[index]
    after = _first_tiers(runtime, "b-")
    assert all(decision["reasons"][1].startswith("learned scorer") for _, decision in after.values())
    assert {job_id for job_id, (tier, _) in after.items() if tier != "small"} == {
        f"b-hedged-{n}" for n in range(60, 63)
    }


def test_an_encoder_that_fails_leaves_routing_to_the_rules(env, make_app, tmp_path):
    # the policy's scorers want OpenAI embeddings, and nothing answers at that address
    app, runtime = make_app(openai_base_url="http://127.0.0.1:9/v1", policy_ttl_s=0)
    base = runtime.policy()
    scorers = {tier: constant_scorer(10 + 1536, good, 20) for tier, good in (("small", 2), ("large", 18))}
    learned = {"prompt": {"encoder": "openai", "tiers": scorers, "gain_threshold": 0.1}}
    with transaction(runtime.sessions) as session:
        publish_policy(session, Policy.model_validate({**base.model_dump(), "learned": learned}), "openai")
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "a.jsonl", _jobs("a", 10, 1))), "--wait", check=True)
    for job_id, (tier, decision) in _first_tiers(runtime, "a-").items():
        assert decision["policy_version"] == 2 and tier == "small"
        assert decision["reasons"][0].startswith("difficulty"), (job_id, decision["reasons"])
    with transaction(runtime.sessions) as session:
        states = {job.state for job in session.execute(select(Job)).scalars()}
    assert states <= {"succeeded", "needs_review"}
