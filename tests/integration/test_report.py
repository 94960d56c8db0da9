"""`tierflow report` over batches that ran through the real pipeline (PostgreSQL, Redis, a Celery worker)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.routing.errors import InputError
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, ExpertResult, Job
from tierflow.store.policies import publish_policy
from tierflow.store.report_queries import Selection
from tierflow.tasks.submission import submit_file
from tierflow.worker.report import anchor, write_report

TIERFLOW = str(Path(sys.executable).with_name("tierflow"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECTIONS = ("summary", "jobs", "cost", "rates", "latency", "policy", "decisions")
CHARTS = ("jobs-per-tier", "cost-per-tier", "cost-per-kind", "rates", "latency", "policy-success")
SMALL_BATCH = [
    {"id": "r-1", "kind": "support", "payload": {"text": "I forgot my password and cannot log in."}},
    {"id": "r-2", "kind": "prompt", "payload": {"prompt": "What is 6 * 7?"}},
    {
        "id": "r-3",
        "kind": "support",
        "payload": {
            "text": "Intermittent webhook errors after the API migration; several invoices mismatch."
        },
    },
]


def _run_batch(app, runtime, path: Path) -> str:
    report = submit_file(app, runtime, path)
    assert report.batch_id is not None and not report.rejected
    wait_terminal(runtime, report.batch_id, timeout_s=120)
    return report.batch_id


def _examples(tmp_path: Path) -> Path:
    lines = [
        line
        for name in ("support", "documents", "prompts")
        for line in (EXAMPLES / f"{name}.jsonl").read_text().splitlines()
        if line.strip()
    ]
    path = tmp_path / "examples.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(page: str, label: str) -> str:
    match = re.search(rf"<td>{re.escape(label)}</td><td class=\"n\">([^<]*)</td>", page)
    assert match, f"no summary row {label!r}"
    return match.group(1)


def test_report_of_a_batch_has_every_section_chart_and_the_store_numbers(make_app, tmp_path):
    app, runtime = make_app()
    with running_worker(app):
        batch = _run_batch(app, runtime, _examples(tmp_path))
        _run_batch(app, runtime, write_jobs(tmp_path / "other.jsonl", SMALL_BATCH))
    out = tmp_path / "report.html"
    data = write_report(runtime.sessions, runtime.settings, Selection(batch_id=batch), out, last_n=12)
    page = out.read_text()

    with transaction(runtime.sessions) as session:
        jobs = session.execute(select(Job).where(Job.batch_id == batch)).scalars().all()
        attempts = session.execute(select(Attempt).join(Job).where(Job.batch_id == batch)).scalars().all()
        experts = session.execute(select(ExpertResult).join(Job).where(Job.batch_id == batch)).scalars().all()
    per_tier = Counter(job.tier for job in jobs)
    assert {t: sum(n for (tier, _), n in data.tier_state.items() if tier == t) for t in per_tier} == per_tier
    assert data.total == len(jobs) == 70, "the other batch is not in this report"
    assert not any(t.job_id.startswith("r-") for t in data.last), "the newest jobs are the other batch's"
    assert _cell(page, "jobs") == str(len(jobs))
    assert _cell(page, "needs review") == str(sum(1 for j in jobs if j.state == "needs_review"))

    tier_of = {(a.job_id, a.number): a.tier for a in attempts}
    cost_per_tier: Counter[str] = Counter()
    for row in experts:
        cost_per_tier[tier_of[(row.job_id, row.attempt)]] += row.cost_usd
    assert {t: round(s.cost_usd, 9) for t, s in data.tier_spend.items()} == {
        t: round(c, 9) for t, c in cost_per_tier.items()
    }
    actual = sum(s.cost_usd for s in data.kind_spend.values())
    always_large = sum(data.always_large(s) for s in data.kind_spend.values())
    assert actual == pytest.approx(sum(e.cost_usd for e in experts)) and actual > 0
    assert always_large >= actual
    assert data.large_model == runtime.settings.tiers["large"][0]

    escalated = sum(1 for j in jobs if len([a for a in attempts if a.job_id == j.id]) > 1)
    assert escalated > 0
    assert _cell(page, "escalation rate") == f"{100 * escalated / len(jobs):.1f}%"

    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert page.count("<svg") == len(CHARTS)
    for chart in CHARTS:
        assert re.search(rf'<figure class="chart" data-chart="{chart}"><svg[^>]*>.*?<path', page, re.S), chart
    assert not re.findall(r"https?://", page), "the page must work offline: no external URLs"
    assert "always-large estimate" in page and data.large_model in page

    assert len(data.last) == 12
    for trace in data.last:
        assert f'href="#{anchor(trace.job_id)}"' in page
        details = re.search(rf'<details id="{anchor(trace.job_id)}">(.*?)</details>', page, re.S)
        assert details, trace.job_id
        assert f"tierflow explain {trace.job_id}" in details.group(1)
        assert f"Analysis (stage {trace.analysis['stage']})" in details.group(1)
        for attempt in trace.attempts:
            assert f"Attempt {attempt.number} on {attempt.tier}" in details.group(1)
            for expert in attempt.experts:
                assert f"<td>{expert['expert']}</td>" in details.group(1)


def test_success_per_policy_version_draws_one_line_per_version(make_app, tmp_path):
    app, runtime = make_app()
    with running_worker(app):
        batch = _run_batch(app, runtime, write_jobs(tmp_path / "small.jsonl", SMALL_BATCH))
    with transaction(runtime.sessions) as session:
        first = session.execute(
            select(Attempt).where(Attempt.job_id == "r-2", Attempt.number == 1)
        ).scalar_one()
        first.decision = {**first.decision, "policy_version": 2}
        publish_policy(session, runtime.policy(), "reflect", {}, "small: <learned> the first tier moves up")
    data = write_report(runtime.sessions, runtime.settings, Selection(batch_id=batch), tmp_path / "p.html")
    assert {o.policy_version for o in data.outcomes} == {1, 2}
    page = (tmp_path / "p.html").read_text()
    assert "policy v1" in page and "policy v2" in page
    assert [(v.version, v.parent, v.reason) for v in data.versions] == [
        (1, None, "initial policy from settings"),
        (2, 1, "reflect"),
    ]
    versions = re.search(r'<div id="policy-versions">(.*?)</div>', page, re.S)
    assert versions is not None and "&lt;learned&gt; the first tier moves up" in versions.group(1)


def test_since_keeps_only_the_jobs_created_after_the_date(make_app, tmp_path):
    app, runtime = make_app()
    with running_worker(app):
        _run_batch(app, runtime, write_jobs(tmp_path / "small.jsonl", SMALL_BATCH))
    old = datetime.now(UTC) - timedelta(days=10)
    with transaction(runtime.sessions) as session:
        session.execute(update(Job).where(Job.id.in_(["r-1", "r-2"])).values(created_at=old))
    since = Selection(since=datetime.now(UTC) - timedelta(days=1))
    data = write_report(runtime.sessions, runtime.settings, since, tmp_path / "since.html")
    assert data.total == 1 and [t.job_id for t in data.last] == ["r-3"]
    assert write_report(runtime.sessions, runtime.settings, Selection(), tmp_path / "all.html").total == 3


def test_unknown_batch_is_an_input_error(make_app, tmp_path):
    _, runtime = make_app()
    with pytest.raises(InputError, match="no batch 'nope'"):
        write_report(runtime.sessions, runtime.settings, Selection(batch_id="nope"), tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


@pytest.fixture()
def env(db, pg_url: str, redis_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    return {**base, "TIERFLOW_DATABASE_URL": pg_url, "TIERFLOW_BROKER_URL": redis_url}


def _tierflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERFLOW, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_bad_input_is_one_line_and_an_empty_selection_is_a_page_saying_so(env, tmp_path):
    out = tmp_path / "r.html"
    unknown = _tierflow(env, "report", "--batch", "nope", "--html", str(out))
    assert unknown.returncode == 2 and unknown.stderr == "error: tierflow report: --batch: no batch 'nope'\n"
    bad_date = _tierflow(env, "report", "--since", "last tuesday", "--html", str(out))
    assert bad_date.returncode == 2 and bad_date.stderr.count("\n") == 1
    assert "--since: not a date: 'last tuesday'" in bad_date.stderr
    both = _tierflow(env, "report", "--batch", "b", "--since", "2026-01-01", "--html", str(out))
    assert both.returncode == 2 and "not both" in both.stderr
    assert not out.exists()
    empty = _tierflow(env, "report", "--since", "2026-01-01", "--html", str(out))
    assert empty.returncode == 0, empty.stderr
    page = out.read_text()
    assert 'id="empty"' in page and "No jobs match this selection" in page and "<svg" not in page
