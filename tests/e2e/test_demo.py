"""`tierflow demo`, the README's first command, run as a user runs it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIERFLOW = str(Path(sys.executable).with_name("tierflow"))

pytestmark = pytest.mark.e2e


def test_demo_runs_every_example_to_a_terminal_state_with_one_result_each(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "COLUMNS": "120"}
    done = subprocess.run(
        [TIERFLOW, "demo", "--database", str(database)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for figure in (
        "tier small",
        "tier medium",
        "tier large",
        "escalations",
        "needs review",
        "total cost",
        "cost per job",
        "latency p50",
        "latency p95",
    ):
        assert figure in done.stdout
    # the loop closes: reflect learns from the demo's own outcomes and publishes version 2
    assert "reflect on these outcomes: version 2 published. support: " in done.stdout
    examples = sum(
        1
        for name in ("support", "documents", "prompts")
        for line in (ROOT / "examples" / f"{name}.jsonl").read_text().splitlines()
        if line.strip()
    )
    with sqlite3.connect(database) as db:
        states = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        results = db.execute("SELECT count(*), count(DISTINCT job_id) FROM results").fetchone()
        escalated = db.execute("SELECT count(*) FROM attempts WHERE verdict = 'escalate'").fetchone()[0]
    assert sum(states.values()) == examples
    assert set(states) <= {"succeeded", "needs_review", "failed"} and states.get("succeeded", 0) > 0
    assert states.get("needs_review", 0) > 0 and escalated > 0
    assert results == (examples, examples)
    assert f"{examples} jobs" in done.stdout


def test_demo_outside_the_project_names_the_missing_file(tmp_path: Path) -> None:
    done = subprocess.run([TIERFLOW, "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: examples/support.jsonl: <file>: no such file"
