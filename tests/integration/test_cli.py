"""The `tierflow` command as a user runs it, against the real PostgreSQL and Redis."""

from __future__ import annotations

import csv
import io
import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select, text

from tests.integration.conftest import run, running_worker, write_jobs
from tierflow.store.db import make_engine
from tierflow.store.models import Base, Job
from tierflow.store.schema import current_revision, downgrade, head_revision, upgrade

GOOD = [
    {"id": "cli-1", "kind": "support", "payload": {"text": "Where is my parcel? Tracking shows nothing."}},
    {"id": "cli-2", "kind": "prompt", "payload": {"prompt": "What is 6 * 7?"}},
]


def _jobs(pg_url: str) -> int:
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(Job)).scalar_one()
    engine.dispose()
    return int(count)


def test_bad_lines_are_reported_by_line_and_field_and_nothing_is_stored(env, pg_url, tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_text(json.dumps(GOOD[0]) + "\n{broken\n" + json.dumps({"kind": "fax", "payload": {}}) + "\n")
    done = run(env, "submit", str(source))
    assert done.returncode == 2
    assert f"{source}:2: <line>: not valid JSON" in done.stderr
    assert f"{source}:3: kind: " in done.stderr
    assert "nothing was stored" in done.stderr
    assert _jobs(pg_url) == 0


def test_skip_invalid_stores_the_good_lines_and_json_reports_the_bad(env, pg_url, tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_text(json.dumps(GOOD[0]) + "\n" + json.dumps({"kind": "support", "payload": {}}) + "\n")
    done = run(env, "submit", str(source), "--skip-invalid", "--json", check=True)
    report = json.loads(done.stdout)
    assert report["accepted"] == 1 and report["batch_id"].startswith("batch-")
    assert report["rejected"] == [{"line": 2, "field": "payload.text", "reason": "Field required"}]
    assert _jobs(pg_url) == 1


def test_submitting_the_same_file_twice_creates_no_duplicates(env, pg_url, tmp_path):
    source = write_jobs(tmp_path / "jobs.jsonl", GOOD)
    first = json.loads(run(env, "submit", str(source), "--json", check=True).stdout)
    second = json.loads(run(env, "submit", str(source), "--json", check=True).stdout)
    assert first["batch_id"] == second["batch_id"]
    assert (first["accepted"], second["accepted"], second["duplicates"]) == (2, 0, 2)
    assert _jobs(pg_url) == 2


def test_reusing_an_id_for_other_content_is_refused(env, tmp_path):
    run(env, "submit", str(write_jobs(tmp_path / "a.jsonl", GOOD)), check=True)
    changed = [{**GOOD[0], "payload": {"text": "Something else entirely"}}]
    done = run(env, "submit", str(write_jobs(tmp_path / "b.jsonl", changed)), "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["rejected"][0]["reason"] == "job cli-1 already exists with other content"


def test_wait_status_and_results_in_both_formats(env, make_app, tmp_path):
    app, _ = make_app()
    with running_worker(app):
        done = run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", GOOD)), "--wait", check=True)
    batch = done.stdout.strip().splitlines()[-1]
    status = run(env, "status", batch, check=True).stdout
    assert "succeeded" in status and "2 jobs" in status
    rows = [json.loads(line) for line in run(env, "results", batch, check=True).stdout.splitlines()]
    assert [r["job_id"] for r in rows] == ["cli-1", "cli-2"]
    for row in rows:
        assert {
            "job_id",
            "kind",
            "state",
            "tier_path",
            "output",
            "verdict",
            "cost_usd",
            "tokens",
            "latency_s",
        } <= set(row)
        assert row["state"] == "succeeded" and row["tokens"] > 0
    # cli-2 is among the 5% of job ids that start on the top tier while nothing is learned
    assert [row["tier_path"] for row in rows] == [["small"], ["large"]]
    assert rows[1]["output"]["answer"] == "42"
    table = list(
        csv.DictReader(io.StringIO(run(env, "results", batch, "--format", "csv", check=True).stdout))
    )
    assert [r["job_id"] for r in table] == ["cli-1", "cli-2"] and json.loads(table[0]["tier_path"]) == [
        "small"
    ]


def test_unknown_batch_is_a_one_line_error(env):
    done = run(env, "status", "batch-nope")
    assert done.returncode == 2 and done.stderr.strip().endswith("no batch 'batch-nope'")


def test_unreachable_broker_is_one_line_naming_it_and_stores_nothing(env, pg_url, tmp_path):
    env = {**env, "TIERFLOW_BROKER_URL": "redis://:hunter2@127.0.0.1:1/0"}
    done = run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", GOOD)))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("error: broker unreachable at redis://:***@127.0.0.1:1/0")
    assert "hunter2" not in done.stderr and _jobs(pg_url) == 0


def test_unreachable_database_is_one_line_naming_it(env, tmp_path):
    env = {**env, "TIERFLOW_DATABASE_URL": "postgresql+psycopg://tierflow:s3cret@127.0.0.1:1/nowhere"}
    done = run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", GOOD)))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1
    assert lines[0].startswith(
        "error: database unreachable at postgresql+psycopg://tierflow:***@127.0.0.1:1/"
    )
    assert "s3cret" not in done.stderr


def test_unmigrated_database_is_refused_with_the_fix(env, pg_url, redis_url, tmp_path):
    admin = create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('DROP DATABASE IF EXISTS "tierflow_empty_cli"'))
        connection.execute(text('CREATE DATABASE "tierflow_empty_cli"'))
    try:
        empty = pg_url.rsplit("/", 1)[0] + "/tierflow_empty_cli"
        done = run(
            {**env, "TIERFLOW_DATABASE_URL": empty}, "submit", str(write_jobs(tmp_path / "j.jsonl", GOOD))
        )
        assert done.returncode == 1 and "run `tierflow db upgrade`" in done.stderr
    finally:
        with admin.connect() as connection:
            connection.execute(text('DROP DATABASE IF EXISTS "tierflow_empty_cli" WITH (FORCE)'))
        admin.dispose()


def test_migration_applies_to_an_empty_database_and_downgrades(pg_url):
    admin = create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('DROP DATABASE IF EXISTS "tierflow_migrate"'))
        connection.execute(text('CREATE DATABASE "tierflow_migrate"'))
    engine = make_engine(pg_url.rsplit("/", 1)[0] + "/tierflow_migrate")
    try:
        upgrade(engine)
        tables = set(inspect(engine).get_table_names())
        assert {
            "batches",
            "jobs",
            "attempts",
            "expert_results",
            "results",
            "feedback",
            "policy_versions",
        } <= tables
        uniques = {tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("expert_results")}
        assert ("job_id", "attempt", "expert") in uniques
        assert current_revision(engine) == head_revision(engine) is not None
        columns = {c["name"] for c in inspect(engine).get_columns("policy_versions")}
        assert {"statistics", "reflection"} <= columns
        with engine.connect() as connection:
            drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert drift == [], "the migration creates exactly what the models describe"
        downgrade(engine)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert current_revision(engine) is None
        upgrade(engine, "0001")
        assert current_revision(engine) == "0001"
        upgrade(engine)
        assert current_revision(engine) == head_revision(engine)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text('DROP DATABASE IF EXISTS "tierflow_migrate" WITH (FORCE)'))
        admin.dispose()


def test_explain_prints_the_whole_path_of_an_escalated_job(env, make_app, tmp_path):
    app, _ = make_app()
    invoice = {
        "id": "inv-1",
        "kind": "document",
        "payload": {"text": "ACME CO\nInvoice No: INV-7\nDate: 2026-01-02\nSubtotal 100.00\nTotal 108.00"},
    }
    with running_worker(app):
        run(env, "submit", str(write_jobs(tmp_path / "jobs.jsonl", [invoice])), "--wait", check=True)
    text = run(env, "explain", "inv-1", check=True).stdout
    for part in (
        "job inv-1 (document): succeeded",
        "analysis (rules)",
        "attempt 1 on small",
        "-> escalate",
        "total disagrees: model 100.00, rules 108.00",
        "attempt 2 on medium",
        "-> accept",
        "extractor (fake:fake-medium)",
        "call fake:fake-medium: ok",
        "result: accept at medium",
    ):
        assert part in text, part
    trace = json.loads(run(env, "explain", "inv-1", "--json", check=True).stdout)
    assert [a["tier"] for a in trace["attempts"]] == ["small", "medium"]
    assert (
        trace["attempts"][1]["queue"] == "tier.medium"
        and trace["result"]["output"]["fields"]["total"] == "108.00"
    )
    assert trace["cost_usd"] == pytest.approx(
        sum(e["cost_usd"] for a in trace["attempts"] for e in a["experts"])
    )
    missing = run(env, "explain", "nope")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: tierflow explain: job: no job 'nope'"
