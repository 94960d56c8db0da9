"""The report's charts: matplotlib figures rendered to SVG and inlined in the page.

Each chart takes the report's data and returns an SVG fragment with no external
references (no XML header, no namespace URLs), so the page works offline.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tierflow.routing.states import JobState
from tierflow.store.report_queries import TIERS, ReportData, rates, success_series

STATES = [
    s.value
    for s in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW, JobState.NEEDS_CLARIFICATION, JobState.FAILED)
]
STATE_COLOURS = {
    "succeeded": "#3a923a",
    "needs_review": "#e0a030",
    "needs_clarification": "#5a8fc8",
    "failed": "#c03d3d",
}
OTHER_COLOUR = "#9e9e9e"
ACTUAL, LARGE = "#4c72b0", "#c44e52"


def _svg(figure: Figure, name: str) -> str:
    """The figure as inline SVG: no XML prolog, no namespace URLs, ids unique to this chart."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg).replace("xlink:href", "href")
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'(\bid="|href="#|url\(#)', lambda m: f"{m.group(1)}{name}-", svg)
    return svg.replace("<svg", f'<svg role="img" aria-label="{html.escape(name)}"', 1)


def _chart(
    name: str, title: str, draw: Callable[[Axes], None], size: tuple[float, float] = (6.4, 3.4)
) -> str:
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=11)
    axes.spines[["top", "right"]].set_visible(False)
    draw(axes)
    return f'<figure class="chart" data-chart="{name}">{_svg(figure, name)}</figure>'


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data in this selection", ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])


def chart_jobs(data: ReportData) -> str:
    tiers = [t for t in [*TIERS, "-"] if any(k[0] == t for k in data.tier_state)]
    states = [s for s in [*STATES, *sorted({k[1] for k in data.tier_state} - set(STATES))]]

    def draw(axes: Axes) -> None:
        bottom = [0] * len(tiers)
        for state in states:
            counts = [data.tier_state.get((tier, state), 0) for tier in tiers]
            if any(counts):
                colour = STATE_COLOURS.get(state, OTHER_COLOUR)
                axes.bar(tiers, counts, bottom=bottom, label=state, color=colour)
                bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        axes.set_xlabel("final tier")
        axes.set_ylabel("jobs")
        axes.legend(fontsize=8, frameon=False)

    return _chart("jobs-per-tier", "Jobs per final tier and state", draw)


def _grouped_bars(axes: Axes, labels: list[str], series: dict[str, tuple[list[float], str]]) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, (values, colour)) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        axes.bar(xs, values, width=width, label=name, color=colour)
    axes.set_xticks(range(len(labels)), labels)
    axes.legend(fontsize=8, frameon=False)


def chart_cost_tier(data: ReportData) -> str:
    tiers = [t for t in TIERS if t in data.tier_spend]

    def draw(axes: Axes) -> None:
        if not tiers:
            return _no_data(axes)
        actual = [data.tier_spend[t].cost_usd for t in tiers]
        large = [data.always_large(data.tier_spend[t]) for t in tiers]
        _grouped_bars(axes, tiers, {"actual": (actual, ACTUAL), "same calls at large price": (large, LARGE)})
        axes.set_xlabel("tier of the attempt")
        axes.set_ylabel("USD")

    return _chart("cost-per-tier", "Cost per tier against always-large", draw)


def chart_cost_kind(data: ReportData) -> str:
    kinds = sorted(data.kind_spend)

    def draw(axes: Axes) -> None:
        if not kinds:
            return _no_data(axes)
        actual = [data.kind_spend[k].cost_usd for k in kinds]
        large = [data.always_large(data.kind_spend[k]) for k in kinds]
        _grouped_bars(axes, kinds, {"actual": (actual, ACTUAL), "always-large estimate": (large, LARGE)})
        axes.set_xlabel("job class (kind)")
        axes.set_ylabel("USD")

    return _chart("cost-per-kind", "Cost per job class against always-large", draw)


def chart_rates(data: ReportData) -> str:
    table = rates(data)

    def draw(axes: Axes) -> None:
        if not data.paths:
            return _no_data(axes)
        labels = list(table)
        escalation = [100 * table[n][1] for n in labels]
        review = [100 * table[n][2] for n in labels]
        _grouped_bars(axes, labels, {"escalated": (escalation, ACTUAL), "needs review": (review, "#e0a030")})
        axes.set_xlabel("first tier")
        axes.set_ylabel("% of jobs")
        axes.set_ylim(0, 100)

    return _chart("rates", "Escalation and review rates per first tier", draw)


def chart_latency(data: ReportData) -> str:
    tiers = [t for t in TIERS if data.latencies.get(t)]

    def draw(axes: Axes) -> None:
        if not tiers:
            return _no_data(axes)
        axes.boxplot([data.latencies[t] for t in tiers], tick_labels=tiers, showmeans=True)
        axes.set_xlabel("tier")
        axes.set_ylabel("seconds per attempt")

    return _chart("latency", "Latency per tier (attempt start to verdict)", draw)


def chart_policy(data: ReportData) -> str:
    buckets, series = success_series(data.outcomes)

    def draw(axes: Axes) -> None:
        if not buckets:
            return _no_data(axes)
        for version, values in series.items():
            points = [(i, v) for i, v in enumerate(values) if v is not None]
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"policy v{version}")
        axes.set_xticks(range(len(buckets)), buckets, rotation=20, fontsize=8)
        axes.set_ylim(0, 105)
        axes.set_xlabel("finished (UTC)")
        axes.set_ylabel("% succeeded")
        axes.legend(fontsize=8, frameon=False)

    return _chart("policy-success", "Success rate per policy version over time", draw)


CHARTS = (chart_jobs, chart_cost_tier, chart_cost_kind, chart_rates, chart_latency, chart_policy)
