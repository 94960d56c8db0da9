"""Sending the pipeline's messages to the right queues. Called after the commit."""

from __future__ import annotations

from typing import Any

from worker.app import CLASSIFY_QUEUE


def send_classify(app: Any, job_id: str) -> None:
    app.send_task("tierflow.classify", args=(job_id,), queue=CLASSIFY_QUEUE)


def send_attempt(app: Any, job_id: str, attempt: int, tier: str) -> None:
    app.send_task("tierflow.run_job", args=(job_id, attempt), queue=f"tier.{tier}")
