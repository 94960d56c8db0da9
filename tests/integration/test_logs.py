"""Structured logs: what a worker logs inside a task carries the job id, attempt and task."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.tasks.submission import submit_file
from tierflow.worker.logs import IdsFilter, JsonFormatter


def test_each_task_logs_one_json_event_with_its_job_and_attempt(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, runtime = make_app(log_format="json")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    handler.addFilter(IdsFilter())
    handler.setFormatter(JsonFormatter())
    events = logging.getLogger("tierflow.events")
    events.addHandler(handler)
    events.setLevel(logging.INFO)
    try:
        jobs = [{"id": "log-1", "kind": "prompt", "payload": {"prompt": "What is 2 + 2?"}}]
        with running_worker(app):
            report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
            wait_terminal(runtime, report.batch_id)
    finally:
        events.removeHandler(handler)
    records = [json.loads(line) for line in lines]
    assert records, "no task event was logged"
    by_task = {r["task"]: r for r in records if r.get("job_id") == "log-1"}
    assert {"tierflow.classify", "tierflow.expert", "tierflow.aggregate"} <= set(by_task)
    assert by_task["tierflow.expert"]["attempt"] == 1 and by_task["tierflow.expert"]["expert"]
    assert all(r["message"] == "task finished" and r["state"] == "SUCCESS" for r in by_task.values())
    assert all(isinstance(r["duration_s"], float) and r["task_id"] for r in by_task.values())
