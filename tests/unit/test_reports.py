"""The figures a batch summary gives."""

from __future__ import annotations

from tierflow.store.reports import percentile, summarize


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([], 0.5) is None


def test_summary_counts_tiers_escalations_states_and_cost() -> None:
    rows = [
        {"tier_path": ["small"], "state": "succeeded", "cost_usd": 0.001, "latency_s": 1.0},
        {"tier_path": ["small", "medium"], "state": "succeeded", "cost_usd": 0.003, "latency_s": 2.0},
        {"tier_path": ["medium", "large"], "state": "needs_review", "cost_usd": 0.006, "latency_s": 3.0},
        {"tier_path": [], "state": "queued", "cost_usd": 0.0, "latency_s": None},
    ]
    summary = summarize(rows)
    assert summary["escalations"] == 2
    assert summary["first_tier"] == {"small": 2, "medium": 1, "-": 1}
    assert summary["final_tier"] == {"small": 1, "medium": 1, "large": 1, "-": 1}
    assert summary["states"] == {"succeeded": 2, "needs_review": 1, "queued": 1}
    assert (
        abs(summary["total_cost_usd"] - 0.010) < 1e-12 and abs(summary["cost_per_job_usd"] - 0.0025) < 1e-12
    )
    assert summary["latency_p50_s"] == 2.0
