"""Sending the pipeline's messages to the right queues. Called after the commit."""

from __future__ import annotations

from typing import Any

from tierflow.worker.app import CLASSIFY_QUEUE


def send_classify(app: Any, job_id: str) -> None:
    app.send_task("tierflow.classify", args=(job_id,), queue=CLASSIFY_QUEUE)


def send_attempt(app: Any, job_id: str, attempt: int, tier: str) -> None:
    app.send_task("tierflow.run_job", args=(job_id, attempt), queue=f"tier.{tier}")


def queue_lengths(app: Any, names: tuple[str, ...]) -> dict[str, int]:
    """Messages waiting in each queue (reserved and unacknowledged ones are not counted).

    A queue the broker cannot report on counts as empty, so its stale jobs are re-sent.
    """
    lengths: dict[str, int] = {}
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in names:
            try:
                lengths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:  # noqa: BLE001 - any broker refusal means "unknown", treated as empty
                lengths[name] = 0
    return lengths
