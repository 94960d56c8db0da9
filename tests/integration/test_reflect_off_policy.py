"""reflect's off-policy gate on the real PostgreSQL: a better candidate is published, a worse one is not.

The logged jobs are decided by the real `routing.decide` under the active version
(so their propensities are what exploration records) and written to the store with
their outcomes: the small tier's answers to prompts full of qualifications are
accepted by the judge and then labelled wrong by a person, everything else is right.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from tests.integration.conftest import run
from tierflow.routing.analysis import Analysis
from tierflow.routing.constraints import DecisionContext
from tierflow.routing.decision import decide
from tierflow.routing.kinds.registry import recorded_prompt_kind
from tierflow.routing.policy import Policy
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, Batch, ExpertResult, Feedback, Job, PolicyVersion
from tierflow.store.policies import publish_policy
from tierflow.tasks.features import job_features
from tierflow.tasks.reflect import run_reflect

LEARNING = {"min_samples": 8, "min_version_samples": 8, "max_share_step": 0.6, "explore_share": 0.3}
EASY = Analysis("general", "general", 0.1, 0.0, False, 0.9, "rules")
COST = {"small": 0.001, "large": 0.01}


def _prompt(job_id: str, n: int) -> str:
    if "hedged" in job_id:
        return f"However you look at order {n}, although it seems settled, however odd, what should I say?"
    return f"Please tell me the opening hours of office {n}."


def _log_jobs(runtime: Any, prefix: str, count: int) -> dict[str, int]:
    """Decide `count` jobs under the active version and store them with their outcomes."""
    policy = runtime.policy()
    now = datetime.now(UTC)
    tiers: dict[str, int] = {"small": 0, "large": 0}
    with transaction(runtime.sessions) as session:
        session.add(Batch(id=prefix, source="test", job_count=count))
        session.flush()
        for n in range(count):
            job_id = f"{prefix}-{'hedged' if n % 2 else 'plain'}-{n}"
            payload = {"prompt": _prompt(job_id, n)}
            features = job_features(runtime, policy, recorded_prompt_kind(), payload)
            ctx = DecisionContext(job_id=job_id, prompt_features=features)
            decision = decide(recorded_prompt_kind(), EASY, policy, ctx)
            tier = decision.tier.value
            tiers[tier] += 1
            good = tier == "large" or "plain" in job_id
            session.add(
                Job(
                    id=job_id, batch_id=prefix, kind="prompt", payload=payload, meta={}, content_hash=job_id,
                    state="succeeded", tier=tier, attempt=1, analysis=EASY.as_dict(),
                    stale_after=now + timedelta(hours=1), finished_at=now,
                )
            )  # fmt: skip
            session.flush()  # the job before the rows that refer to it
            session.add(
                Attempt(
                    job_id=job_id, number=1, tier=tier, state="succeeded", decision=decision.as_dict(),
                    verdict="accept", quality=0.9, started_at=now, finished_at=now,
                )
            )  # fmt: skip
            output = {"answer": "an answer"}
            session.add(
                ExpertResult(job_id=job_id, attempt=1, expert="answerer", output=output, cost_usd=COST[tier])
            )
            key = f"gold:{job_id}"
            session.add(
                Feedback(dedupe_key=key, job_id=job_id, attempt=1, tier=tier, source="gold", correct=good)
            )
    return tiers


def _version(runtime: Any, version: int) -> PolicyVersion:
    with transaction(runtime.sessions) as session:
        row = session.execute(select(PolicyVersion).where(PolicyVersion.version == version)).scalar_one()
        session.expunge(row)
        return row


def test_reflect_publishes_a_better_candidate_and_refuses_a_worse_one(env, make_app):
    _, runtime = make_app(learning=LEARNING, policy_ttl_s=0)
    assert runtime.policy().version == 1  # the rules: every job on small, 30% explore up to large
    tiers = _log_jobs(runtime, "a", 80)
    assert tiers["large"] > 8 and tiers["small"] > 8

    better = run_reflect(runtime)
    assert better.published == 2, better.text
    learned = _version(runtime, 2)
    gate = learned.statistics["off_policy"]
    assert gate["estimated"] and gate["passed"]
    # the learned version starts the hedged prompts on large: its success is estimated well above
    # the rules' (which leave 70% of the hedged ones on small, wrong)
    assert gate["candidate"]["success"]["dr"]["low"] > gate["parent"]["success"]["dr"]["value"]
    assert gate["candidate"]["shares"]["large"] > gate["parent"]["shares"]["large"]
    assert "off-policy estimate (dr, 80 logged jobs)" in learned.reflection
    history = run(env, "policy", "history", check=True).stdout
    dr = gate["candidate"]["success"]["dr"]
    assert f"version 2: estimated success {dr['value']:.3f} [{dr['low']:.3f}, {dr['high']:.3f}]" in history

    # A cost target of 0 asks the next version to send nothing above small, and without a floor
    # on small's P(good) nothing keeps the hedged prompts off it: that costs success.
    body = Policy.model_validate(learned.body).model_dump(mode="json")
    body["learning"].update(target={"kind": "cost", "value": 0.0}, min_start_probability=0.0)
    with transaction(runtime.sessions) as session:
        publish_policy(session, Policy.model_validate(body), "a cost target of 0")
    _log_jobs(runtime, "b", 80)
    worse = run_reflect(runtime)
    assert (worse.from_version, worse.published) == (3, None), worse.text
    assert "not published" in worse.text and "beyond the tolerance of 5%" in worse.text
    assert runtime.policy().version == 3

    estimated = json.loads(run(env, "eval", "policy", "--candidate", "2", "--json", check=True).stdout)
    assert estimated["version"] == 2 and estimated["rows"] == 160 and estimated["without_propensity"] == 0
    assert set(estimated["success"]) == {"ips", "snips", "dr"}
    assert estimated["logged"]["versions"] == [1, 3]
    table = run({**env, "COLUMNS": "200"}, "eval", "policy", "--candidate", "3", check=True).stdout
    assert "policy version 3, estimated on 160 logged jobs" in table
    assert "success rate" in table and "share starting on large" in table
    since = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    code = run(env, "eval", "policy", "--candidate", "2", "--since", since).returncode
    assert code == 2  # nothing logged since then
