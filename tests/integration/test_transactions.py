"""How many PostgreSQL transactions a job costs, by task, on a real worker.

Every transaction a tierflow task commits (or rolls back) on the runtime's engine is
counted under the task's name: a job whose first attempt, with 3 experts, is accepted
costs 4 (the issue's budget is 5), and each escalation 2 more.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from celery import signals
from sqlalchemy import event, select

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.store.db import transaction
from tierflow.store.models import Attempt, Job
from tierflow.tasks.submission import submit_file

EASY = "I forgot my password and cannot log in. Job {n}."
PREFIX = "tx-"


def _names_a_job(parameters) -> bool:
    rows = parameters if isinstance(parameters, list | tuple) else [parameters]
    values = [v for row in rows for v in (row.values() if isinstance(row, dict) else [row])]
    return any(isinstance(v, str) and v.startswith(PREFIX) for v in values)


@contextmanager
def counted(engine) -> Iterator[Counter[str]]:
    """The transactions that read or write one of the test's jobs, ended by worker threads, by
    the task the thread ran last (a chord's callback is sent after its expert's body returns).
    A process's cache fills (the policy, the knowledge base) name no job and are not counted:
    they are paid once per process and interval, not per job."""
    by_task: Counter[str] = Counter()
    last = threading.local()
    listeners = []

    def started(task=None, **_) -> None:
        last.name = task.name

    def statement(connection, cursor, sql, parameters, context, executemany) -> None:
        if _names_a_job(parameters):
            connection.info["names_a_job"] = True

    def ended(connection) -> None:
        name = getattr(last, "name", "")
        if connection.info.pop("names_a_job", False) and name.startswith("tierflow."):
            by_task[name.removeprefix("tierflow.")] += 1

    signals.task_prerun.connect(started, weak=False)
    for name, listener in (("before_cursor_execute", statement), ("commit", ended), ("rollback", ended)):
        event.listen(engine, name, listener)
        listeners.append((name, listener))
    try:
        yield by_task
    finally:
        signals.task_prerun.disconnect(started)
        for name, listener in listeners:
            event.remove(engine, name, listener)


def _run(make_app, tmp_path, jobs: int, **settings) -> tuple[Counter[str], list[Job], list[Attempt]]:
    app, runtime = make_app(**settings)
    lines = [
        {"id": f"{PREFIX}{n}", "kind": "support", "payload": {"text": EASY.format(n=n)}} for n in range(jobs)
    ]
    source = write_jobs(tmp_path / "jobs.jsonl", lines)
    with counted(runtime.engine) as by_task, running_worker(app):
        report = submit_file(app, runtime, source)
        wait_terminal(runtime, report.batch_id)
    with transaction(runtime.sessions) as session:
        stored = list(session.execute(select(Job)).scalars())
        attempts = list(session.execute(select(Attempt)).scalars())
    return by_task, stored, attempts


def test_an_accepted_first_attempt_with_three_experts_costs_four_transactions(make_app, tmp_path):
    by_task, jobs, attempts = _run(make_app, tmp_path, jobs=6)
    assert {job.state for job in jobs} == {"succeeded"}
    assert {(a.number, len(a.decision["experts"])) for a in attempts} == {(1, 3)}
    per_job = {task: count / len(jobs) for task, count in by_task.items()}
    # classify creates attempt 1 running and fans it out: no run_job between
    assert per_job == {"classify": 2, "expert": 1, "aggregate": 1}, per_job
    assert {a.queue for a in attempts} == {"tier.small"} and None not in {a.worker for a in attempts}


def test_an_escalation_costs_two_transactions_more(make_app, tmp_path):
    by_task, jobs, attempts = _run(make_app, tmp_path, jobs=4, fake_failing_models=["fake:fake-small"])
    assert {job.state for job in jobs} == {"succeeded"}
    assert sorted({a.number for a in attempts}) == [1, 2] and len(attempts) == 2 * len(jobs)
    # attempt 2, fanned out by attempt 1's aggregate, names the worker that judged it on its tier
    workers = {a.worker for a in attempts}
    assert {(a.number, a.queue) for a in attempts} == {(1, "tier.small"), (2, "tier.medium")}
    assert len(workers) == 1 and None not in workers, workers
    per_job = {task: count / len(jobs) for task, count in by_task.items()}
    # the expert that sends each attempt's callback records it, and each attempt is judged once
    assert per_job == {"classify": 2, "expert": 2, "aggregate": 2}, per_job
    assert sum(per_job.values()) == 4 + 2
