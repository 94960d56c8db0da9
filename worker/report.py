"""`tierflow report`: one self-contained HTML page about a batch (or a time window) of jobs.

The figures come from store/report_queries.py; the charts are drawn by matplotlib as
SVG and inlined, so the page needs no network, no CDN and no JavaScript library.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from hashlib import sha1
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tierflow.providers.pricing import Price, price_for, price_table
from tierflow.store import report_queries as q
from tierflow.store.db import transaction
from tierflow.store.policies import active_policy
from tierflow.store.report_queries import ReportData, rates
from tierflow.worker.report_charts import (
    STATES,
    chart_cost_kind,
    chart_cost_tier,
    chart_jobs,
    chart_latency,
    chart_policy,
    chart_rates,
)
from tierflow.worker.settings import Settings

EXPLAIN = "tierflow explain"


def _large_price(session: Session, settings: Settings) -> tuple[str, Price]:
    """The top tier's first model (active policy first, then settings) and its price."""
    policy = active_policy(session)
    models = policy.tier_models.get(policy.ladder[-1]) if policy else None
    ref = (models or settings.tiers[settings.ladder[-1].value])[0]
    provider, model = ref.split(":", 1)
    return ref, price_for(price_table(settings.price_overrides()), provider, model)


def write_report(
    sessions: sessionmaker[Session], settings: Settings, selection: q.Selection, out: Path, last_n: int = 20
) -> ReportData:
    """Read the selection's figures and write the page to `out`; return the figures."""
    with transaction(sessions) as session:
        q.require_batch(session, selection)
        model, price = _large_price(session, settings)
        data = q.collect(session, selection, last_n, model, price)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(data), encoding="utf-8")
    return data


# ---------------------------------------------------------------- charts


# ---------------------------------------------------------------- page

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1320px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px}
.grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.chart{margin:0;flex:1 1 560px;max-width:640px}
.chart svg{width:100%;height:auto}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}td:first-child,td code{white-space:nowrap}
code{background:#f3f3f3;padding:0 3px}
details{border:1px solid #ddd;margin:6px 0;padding:4px 8px}details:target{border-color:#4c72b0}
.row{display:flex;flex-wrap:wrap;gap:0 32px}.row>section{flex:1 1 auto}
.pair>section{flex:1 1 0;min-width:520px}
.muted{color:#666}.empty{font-size:16px;padding:24px;background:#f7f7f7}
"""
# Opens a trace when its link is followed; inline, like everything else on the page.
SCRIPT = (
    "function openTarget(){var e=document.getElementById(location.hash.slice(1));"
    "if(e&&e.tagName==='DETAILS'){e.open=true;}}"
    "addEventListener('hashchange',openTarget);openTarget();"
)


def _e(value: object) -> str:
    return html.escape(str(value))


def _usd(value: float) -> str:
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def anchor(job_id: str) -> str:
    """An id fit for an HTML anchor, unique per job id."""
    slug = re.sub(r"[^A-Za-z0-9_-]", "-", job_id)
    return f"job-{slug}" if slug == job_id else f"job-{slug}-{sha1(job_id.encode()).hexdigest()[:8]}"


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{c}</td>' if i in (numeric or set()) else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def render_page(data: ReportData) -> str:
    title = f"tierflow report: {data.selection.describe()}"
    if data.total == 0:
        body = (
            f'<p class="empty" id="empty">No jobs match this selection ({_e(data.selection.describe())}).</p>'
        )
    else:
        body = "".join(
            f'<div class="row{" pair" if row in PAIRS else ""}">' + "".join(s(data) for s in row) + "</div>"
            for row in ROWS
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"
        f'<p class="muted">{data.total} jobs; generated {generated}</p>{body}'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def section_summary(data: ReportData) -> str:
    states = {s: sum(n for (_, st), n in data.tier_state.items() if st == s) for s in STATES}
    actual = sum(s.cost_usd for s in data.kind_spend.values())
    large = sum(data.always_large(s) for s in data.kind_spend.values())
    overall = rates(data)["all"]
    rows = [
        ["jobs", str(data.total)],
        *[[state.replace("_", " "), str(n)] for state, n in states.items()],
        ["escalation rate", f"{100 * overall[1]:.1f}%"],
        ["review rate", f"{100 * overall[2]:.1f}%"],
        ["actual cost", _usd(actual)],
        ["always-large estimate", _usd(large)],
        ["saved against always-large", f"{100 * (1 - actual / large):.1f}%" if large else "-"],
    ]
    return f'<section id="summary"><h2>Summary</h2>{_table(["figure", "value"], rows, {1})}</section>'


def section_jobs(data: ReportData) -> str:
    rows = [[_e(t), _e(s), str(n)] for (t, s), n in sorted(data.tier_state.items())]
    table = _table(["final tier", "state", "jobs"], rows, {2})
    grid = f'<div class="grid">{chart_jobs(data)}{table}</div>'
    return f'<section id="jobs"><h2>Jobs per tier and state</h2>{grid}</section>'


def section_cost(data: ReportData) -> str:
    price = data.large_price
    note = (
        "<p>The <b>always-large estimate</b> prices every recorded model call of these jobs "
        f"(its input and output tokens) at the large tier's first model, <code>{_e(data.large_model)}</code> "
        f"(${price.input_per_million:g} / ${price.output_per_million:g} per million input / output tokens). "
        "It assumes the large model would use as many tokens as the models that answered. It counts the "
        "calls of every attempt, so for an escalated job it is what all its attempts would have cost at "
        "the large price; a run that went to the large tier directly would have made one attempt.</p>"
    )
    rows = [
        [_e(k), _usd(s.cost_usd), _usd(data.always_large(s)), str(s.input_tokens + s.output_tokens)]
        for k, s in sorted(data.kind_spend.items())
    ]
    table = _table(["kind", "actual", "always-large", "tokens"], rows, {1, 2, 3})
    charts = chart_cost_tier(data) + chart_cost_kind(data)
    return f'<section id="cost"><h2>Cost</h2>{note}<div class="grid">{charts}</div>{table}</section>'


def section_rates(data: ReportData) -> str:
    rows = [[_e(n), str(j), f"{100 * e:.1f}%", f"{100 * r:.1f}%"] for n, (j, e, r) in rates(data).items()]
    table = _table(["first tier", "jobs", "escalated", "needs review"], rows, {1, 2, 3})
    return (
        '<section id="rates"><h2>Escalation and review rates</h2>'
        f'<div class="grid">{chart_rates(data)}{table}</div></section>'
    )


def section_latency(data: ReportData) -> str:
    return f'<section id="latency"><h2>Latency</h2><div class="grid">{chart_latency(data)}</div></section>'


def section_policy(data: ReportData) -> str:
    return (
        '<section id="policy"><h2>Success rate per policy version</h2>'
        f'<div class="grid">{chart_policy(data)}</div>'
        '<p class="muted">A job counts for the policy version of its first routing decision.</p>'
        f"{_versions_table(data)}</section>"
    )


def _versions_table(data: ReportData) -> str:
    """The versions that decided these jobs: parent, why, and what reflect said it changed."""
    if not data.versions:
        return ""
    rows = [
        [f"v{v.version}", f"v{v.parent}" if v.parent else "-", _e(v.reason), _e(v.reflection or "")]
        for v in data.versions
    ]
    return '<div id="policy-versions">' + _table(["version", "parent", "why", "reflection"], rows) + "</div>"


def section_decisions(data: ReportData) -> str:
    rows = [
        [
            f'<a href="#{anchor(t.job_id)}">{_e(t.job_id)}</a>',
            _e(t.kind),
            _e(t.tier_path[0] if t.tier_path else "-"),
            _e(" → ".join(t.tier_path) or "-"),
            _e(t.verdict or t.state),
            _usd(t.cost_usd),
            _e("; ".join(_reasons(t))),
            f"<code>{_e(EXPLAIN)} {_e(t.job_id)}</code>",
        ]
        for t in data.last
    ]
    head = ["job", "kind", "first tier", "tier path", "verdict", "cost", "reasons", "trace"]
    traces = "".join(trace_html(t) for t in data.last)
    return (
        f'<section id="decisions"><h2>Decisions of the last {len(data.last)} jobs</h2>'
        f"{_table(head, rows, {5})}<h3>Traces</h3>{traces}</section>"
    )


def _reasons(trace: q.JobTrace) -> list[str]:
    first = [str(r) for r in trace.attempts[0].decision.get("reasons", [])] if trace.attempts else []
    return first + (trace.attempts[-1].reasons if trace.attempts else [])


def trace_html(trace: q.JobTrace) -> str:
    """The same trace `tierflow explain JOB` prints: analysis, each attempt, verdict, cost, latency."""
    analysis = trace.analysis or {}
    rows = [[_e(k), _e(json.dumps(v) if isinstance(v, dict | list) else v)] for k, v in analysis.items()]
    parts = [f"<h4>Analysis (stage {_e(analysis.get('stage', '-'))})</h4>", _table(["field", "value"], rows)]
    parts += [_attempt_html(a) for a in trace.attempts]
    parts.append(
        f"<p><b>Final:</b> {_e(trace.state)}, verdict {_e(trace.verdict or '-')}, quality "
        f"{_num(trace.quality)}, cost {_usd(trace.cost_usd)}, latency {_num(trace.latency_s, 's')}"
        + (f", error {_e(trace.error)}" if trace.error else "")
        + "</p>"
    )
    return (
        f'<details id="{anchor(trace.job_id)}"><summary><b>{_e(trace.job_id)}</b> {_e(trace.kind)}, '
        f"{_e(trace.state)} · <code>{_e(EXPLAIN)} {_e(trace.job_id)}</code></summary>"
        f"{''.join(parts)}</details>"
    )


def _attempt_html(attempt: q.AttemptTrace) -> str:
    d = attempt.decision
    decision = (
        f"strategy {_e(d.get('strategy', '-'))}, models {_e(', '.join(d.get('models', [])))}, "
        f"policy v{_e(d.get('policy_version', '-'))}, arm {_e(d.get('arm') or '-')}; "
        f"reasons: {_e('; '.join(map(str, d.get('reasons', []))))}"
    )
    experts = [
        [
            _e(x["expert"]),
            _e(x["model"]),
            _num(x["confidence"]),
            _usd(x["cost_usd"]),
            str(x["tokens"]),
            _num(x["latency_s"], "s"),
            _e(x["error"] or ""),
        ]
        for x in attempt.experts
    ]
    head = ["expert", "model", "confidence", "cost", "tokens", "latency", "error"]
    return (
        f"<h4>Attempt {attempt.number} on {_e(attempt.tier)}</h4><p>Decision: {decision}</p>"
        f"{_table(head, experts, {2, 3, 4, 5})}<p>Verdict {_e(attempt.verdict or '-')}, quality "
        f"{_num(attempt.quality)}, latency {_num(attempt.latency_s, 's')}: "
        f"{_e('; '.join(attempt.reasons))}</p>"
    )


# Sections in rows: the sections of one row sit side by side on a wide screen.
ROWS = (
    (section_summary, section_jobs),
    (section_cost,),
    (section_rates,),
    (section_latency, section_policy),
    (section_decisions,),
)
PAIRS = ((section_latency, section_policy),)  # rows of two charts of equal width
