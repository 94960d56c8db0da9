"""What the store says at the end of a chaos run: lost jobs, duplicate results, and whether the cost adds up.

- `lost`: jobs of the batch not in a terminal state.
- `duplicate_results`: result rows beyond one per job (counted, not taken from the
  unique constraint), plus terminal jobs without any result.
- `cost_mismatch_usd`: the cost tierflow reports for the jobs (`tierflow results`, which
  sums the expert results' cost) against the successful model calls recorded in the
  expert results' `calls`, each priced again from its tokens; summed over jobs as
  absolute differences, so two errors cannot cancel.
- The provider server's own count of answered calls against the successful calls the
  store recorded: the difference is calls answered whose record never reached the store
  (a worker killed during the call, or an expert's failed row written again).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg

TERMINAL = ["succeeded", "needs_review", "failed"]
COST_EPSILON_USD = 1e-9  # float sums of the same numbers in another order


def job_figures(connection: psycopg.Connection[Any], batch_id: str) -> dict[str, Any]:
    rows = connection.execute(
        "SELECT state, count(*) FROM jobs WHERE batch_id = %s GROUP BY state", (batch_id,)
    ).fetchall()
    states = {state: int(count) for state, count in rows}
    jobs = sum(states.values())
    terminal = sum(count for state, count in states.items() if state in TERMINAL)
    return {"jobs": jobs, "terminal": terminal, "lost": jobs - terminal, "states": states}


def duplicates(connection: psycopg.Connection[Any], batch_id: str) -> dict[str, int]:
    extra = connection.execute(
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT r.job_id, count(*) AS n FROM results r "
        "JOIN jobs j ON j.id = r.job_id WHERE j.batch_id = %s GROUP BY r.job_id) per_job",
        (batch_id,),
    ).fetchone()
    missing = connection.execute(
        "SELECT count(*) FROM jobs j WHERE j.batch_id = %s AND j.state = ANY(%s) "
        "AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = j.id)",
        (batch_id, TERMINAL),
    ).fetchone()
    extra_rows = int(extra[0]) if extra else 0
    missing_rows = int(missing[0]) if missing else 0
    return {"duplicate_results": extra_rows + missing_rows, "results_missing": missing_rows}


def reported_costs(database_url: str, batch_id: str) -> dict[str, float]:
    """Per job, the cost `tierflow results` reports."""
    from tierflow.store.db import make_engine, make_sessions, transaction
    from tierflow.store.reports import batch_results

    engine = make_engine(database_url)
    try:
        with transaction(make_sessions(engine)) as session:
            return {row["job_id"]: float(row["cost_usd"]) for row in batch_results(session, batch_id)}
    finally:
        engine.dispose()


def call_costs(
    connection: psycopg.Connection[Any], batch_id: str, prices: dict[str, Any]
) -> tuple[dict[str, float], Counter[str]]:
    """Per job, the successful calls' cost priced again from their tokens; the calls by outcome."""
    rows = connection.execute(
        "SELECT e.job_id, e.calls FROM expert_results e JOIN jobs j ON j.id = e.job_id WHERE j.batch_id = %s",
        (batch_id,),
    ).fetchall()
    costs: dict[str, float] = {}
    outcomes: Counter[str] = Counter()
    for job_id, calls in rows:
        for call in calls or []:
            outcomes[call["outcome"]] += 1
            if call["outcome"] != "ok":
                continue
            price = prices[call["model"]]
            costs[job_id] = costs.get(job_id, 0.0) + price.cost(call["input_tokens"], call["output_tokens"])
    return costs, outcomes


def cost_figures(
    connection: psycopg.Connection[Any], database_url: str, batch_id: str, prices: dict[str, Any]
) -> dict[str, Any]:
    reported = reported_costs(database_url, batch_id)
    priced, outcomes = call_costs(connection, batch_id, prices)
    differences = {
        job: abs(reported.get(job, 0.0) - priced.get(job, 0.0)) for job in reported.keys() | priced
    }
    mismatched = sorted(job for job, diff in differences.items() if diff > COST_EPSILON_USD)
    return {
        "cost_mismatch_usd": round(sum(differences[job] for job in mismatched), 9),
        "cost_usd": round(sum(reported.values()), 6),
        "calls_cost_usd": round(sum(priced.values()), 6),
        "jobs_with_cost_mismatch": mismatched[:20],
        "calls_by_outcome": dict(outcomes),
    }


def provider_figures(stats: dict[str, Any], calls_ok: int) -> dict[str, Any]:
    by_outcome: dict[str, int] = stats.get("by_outcome", {})
    answered = by_outcome.get("rules", 0) + by_outcome.get("replay", 0)
    requests = int(stats.get("requests", 0))
    faults = {name: by_outcome.get(name, 0) for name in ("rate_limit", "server_error", "timeout")}
    return {
        "requests": requests,
        "answered": answered,
        "faults": faults,
        "fault_share": round(sum(faults.values()) / requests, 4) if requests else 0.0,
        "answered_not_recorded": answered - calls_ok,
    }


def audit(
    connection: psycopg.Connection[Any],
    database_url: str,
    batch_id: str,
    prices: dict[str, Any],
    provider_stats: dict[str, Any],
) -> dict[str, Any]:
    figures = job_figures(connection, batch_id)
    figures.update(duplicates(connection, batch_id))
    costs = cost_figures(connection, database_url, batch_id, prices)
    figures.update(costs)
    figures["provider"] = provider_figures(provider_stats, costs["calls_by_outcome"].get("ok", 0))
    redelivered = connection.execute(
        "SELECT redeliveries, count(*) FROM jobs WHERE batch_id = %s GROUP BY 1 ORDER BY 1", (batch_id,)
    ).fetchall()
    figures["jobs_by_redeliveries"] = {str(times): int(count) for times, count in redelivered}
    failed = connection.execute(
        "SELECT left(error, 160), count(*) FROM jobs WHERE batch_id = %s AND state = 'failed' "
        "GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
        (batch_id,),
    ).fetchall()
    figures["failed_reasons"] = {str(reason): int(count) for reason, count in failed}
    figures["lost_jobs"] = [
        {"id": job_id, "state": state, "tier": tier, "attempt": attempt, "redeliveries": redeliveries}
        for job_id, state, tier, attempt, redeliveries in connection.execute(
            "SELECT id, state, tier, attempt, redeliveries FROM jobs WHERE batch_id = %s "
            "AND state <> ALL(%s) ORDER BY id LIMIT 20",
            (batch_id, TERMINAL),
        ).fetchall()
    ]
    return figures
