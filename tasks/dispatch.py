"""Sending the pipeline's messages to the right queues. Called after the commit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from celery.utils import uuid
from celery.utils.nodenames import anon_nodename

from tierflow.tasks.leases import SENT_HEADER
from tierflow.tasks.redis_publish import push_classify, redis_channel
from tierflow.worker.app import CLASSIFY_QUEUE

PUBLISH_BATCH = 1000


def send_classify(app: Any, job_id: str) -> None:
    app.send_task("tierflow.classify", args=(job_id,), queue=CLASSIFY_QUEUE)


def send_classify_many(app: Any, job_ids: Iterable[str]) -> int:
    """One classify message per job, published in batches; returns how many were sent.

    The message is the one `send_classify` sends (Celery's own `create_task_message`).
    On Redis, tasks.redis_publish writes them many per LPUSH from one envelope; on other
    transports they are published through one producer inside kombu's `Producer.batch()`,
    one publish each. What this skips of `send_task` is per-message work that a classify message
    does not need: routing (the queue is known), a repr of the arguments, and the
    result backend's subscription (classify ignores its result).
    """
    job_ids = list(job_ids)
    if not job_ids:  # most classifications send no children: no producer, no declare
        return 0
    queue = app.amqp.queues[CLASSIFY_QUEUE]
    create = app.amqp.create_task_message
    origin = anon_nodename()
    delivery_mode = queue.exchange.delivery_mode or app.conf.task_default_delivery_mode
    sent = 0
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(queue)
        channel = redis_channel(producer)
        pushed = None if channel is None else push_classify(app, channel, queue, origin, job_ids)
        if pushed is not None:
            return pushed
        with producer.batch(max_size=PUBLISH_BATCH):
            for job_id in job_ids:
                task_id = uuid()
                headers, properties, body, _ = create(
                    task_id, "tierflow.classify", (job_id,), {}, ignore_result=True,
                    argsrepr=repr((job_id,)), kwargsrepr="{}", origin=origin,
                )  # fmt: skip
                headers[SENT_HEADER] = time.time()  # what before_task_publish stamps on the others
                producer.publish(
                    json.dumps(body), exchange="", routing_key=queue.name, headers=headers,
                    content_type="application/json", content_encoding="utf-8",
                    delivery_mode=delivery_mode, retry=False, **properties,
                )  # fmt: skip
                sent += 1
    return sent


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
