"""The learning loop on recorded GSM8K outcomes through the real workers, as bench/closed_loop.py runs it.

Half the prompts under the rules' first policy version, gold labels that give only the
reference answers, one `tierflow reflect`, then the other half under the learned version
and again under the rules. About a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL, REDIS_HOST_URL, REDIS_TEST_DB, shared_data

ROOT = Path(__file__).resolve().parents[2]
ROUTELLM = shared_data("routellm")

pytestmark = pytest.mark.e2e


def test_the_loop_learns_from_recorded_outcomes_and_the_learned_version_does_better() -> None:
    if ROUTELLM is None:
        message = "../shared/data/routellm is not on this machine"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: missing data fails the run)")
        pytest.skip(message)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "closed_loop.py"),
            "--data",
            str(ROUTELLM / "gsm8k.jsonl"),
            "--admin-url",
            PG_ADMIN_URL,
            "--redis-url",
            f"{REDIS_HOST_URL}/{REDIS_TEST_DB}",
            "--timeout",
            "400",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=450,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    reflected = figures["phase1"]["reflect"]
    assert reflected["published"] == 2, reflected  # upward exploration gave it large outcomes to learn
    phase2 = figures["phase2"]
    learned, rules = phase2["learned"], phase2["v1"]
    large = figures["references"]["always_large"]
    assert learned["decided_by_versions"] == {"2": learned["jobs"]}
    assert learned["answers"]["not_replayed"] <= 2  # the workers got the recorded answers
    assert learned["accuracy"] > rules["accuracy"] + 0.08, (learned, rules)
    assert learned["accuracy"] > 0.9 * large["accuracy"]
    assert learned["cost_usd"] < 0.6 * large["cost_usd_served"]
