"""The database connections a worker holds, and a dropped connection mid-batch."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from sqlalchemy import func, select, text

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.store.db import make_engine, make_sessions, transaction
from tierflow.store.models import Job, Result
from tierflow.tasks.runtime import POOL_OVERFLOW
from tierflow.tasks.submission import submit_file

JOBS = 60


def _jobs() -> list[dict[str, object]]:
    return [
        {
            "id": f"conn-{n:03d}",
            "kind": "prompt",
            "payload": {"prompt": f"What is {n} + {n}? Reply with the number."},
        }
        for n in range(JOBS)
    ]


def _backends(url: str) -> tuple[int, int]:
    """(connections to the test database, of them terminated now): all but this one go."""
    admin = make_engine(url)
    try:
        with admin.connect() as connection:
            database = connection.execute(text("SELECT current_database()")).scalar_one()
            rows = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            ).all()
        return len(rows), sum(1 for (done,) in rows if done)
    finally:
        admin.dispose()


def test_a_worker_survives_its_database_connections_being_terminated_mid_batch(make_app, tmp_path, pg_url):
    app, runtime = make_app(fake_latency_scale=0.3)
    report = submit_file(app, runtime, write_jobs(tmp_path / "conn.jsonl", _jobs()))
    terminated: list[int] = []

    def terminate_when_started() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with transaction(runtime.sessions) as session:
                done = session.execute(select(func.count()).select_from(Result)).scalar_one()
            if done >= 5:
                terminated.append(_backends(pg_url)[1])
                return
            time.sleep(0.05)

    with running_worker(app, concurrency=8):
        killer = threading.Thread(target=terminate_when_started)
        killer.start()
        killer.join(timeout=40)
        # watched through an engine of the test's own, opened after the kill: the worker's pool,
        # not the test's polling, must meet the terminated connections
        observer = make_engine(pg_url)
        try:
            wait_terminal(SimpleNamespace(sessions=make_sessions(observer)), report.batch_id, timeout_s=120)
        finally:
            observer.dispose()
    assert terminated and terminated[0] > 0, "no backend was terminated mid-batch"
    print(f"terminated {terminated[0]} backends mid-batch")
    with transaction(runtime.sessions) as session:
        states = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        results = session.execute(select(func.count()).select_from(Result)).scalar_one()
        errors = session.execute(select(Job.error).where(Job.error.is_not(None))).scalars().all()
    assert results == JOBS, "one result per job"
    assert not [e for e in errors if "OperationalError" in e or "connection" in e.lower()], errors
    assert states.get("failed", 0) == 0, states


def test_a_worker_holds_at_most_its_pool_plus_a_fixed_overflow(make_app, tmp_path):
    app, runtime = make_app(db_pool_size=4, fake_latency_scale=0.2)
    report = submit_file(app, runtime, write_jobs(tmp_path / "pool.jsonl", _jobs()))
    peak = 0
    with running_worker(app, concurrency=4):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            peak = max(peak, runtime.engine.pool.checkedin() + runtime.engine.pool.checkedout())
            with transaction(runtime.sessions) as session:
                left = session.execute(
                    select(func.count()).where(
                        Job.state.in_(["queued", "classified", "running", "escalated"])
                    )
                ).scalar_one()
            if left == 0:
                break
            time.sleep(0.05)
        wait_terminal(runtime, report.batch_id)
    assert 0 < peak <= 4 + POOL_OVERFLOW
