"""An attempt's chord, published as Celery's `chord(header)(callback)` publishes it, in one batch.

For a result backend that joins a chord itself (`supports_native_join`: Redis, the embedded
mode's cache); any other has Celery's chord, which polls with chord_unlock. What a worker
reads is what Celery's chord writes: the callback frozen under the chord's group id, the
chord's size in the result backend (`set_chord_size`: what every header task's
`on_chord_part_return` joins against), for a key-value backend the group (`apply_chord`: its
join restores it and reads each part's stored result), then one task message per expert built
by Celery's own `create_task_message` with the group id, its index in the group and the
callback as its chord. What this leaves out is what an attempt's header does not need:
routing (the queue is known), the exchange's binding lookup (the messages go to the queue by
name, as `send_classify_many`'s do), a publish per message (they go out through one producer
inside kombu's `Producer.batch()`, on Redis one pipelined round trip), and on Redis, whose
join takes what each part pushes as it returns, the parts' stored results (each a SET and a
PUBLISH that no one reads: the messages say `ignore_result`) and the group's result objects
(each would subscribe this process to a result it never reads).
"""

from __future__ import annotations

import time
from typing import Any

from celery.backends.redis import RedisBackend
from celery.utils import uuid
from celery.utils.nodenames import anon_nodename
from kombu.utils.json import dumps

from tierflow.tasks.leases import SENT_HEADER


def send_chord(
    app: Any, queue_name: str, task: str, header: list[tuple[tuple[Any, ...], str]], callback: Any
) -> None:
    """Publish `header` (per task: its args and their repr) as a chord of `task` on `queue_name`,
    then `callback` (a signature, its errback attached) when every one of them has returned.

    The batch is not retried: a broker error is raised before or after any message went out
    (the caller then publishes the chord again through Celery, whose publish retries; a second
    chord of the same attempt is judged once, as a redelivered one is)."""
    if not header:
        callback.delay([])  # as Celery's chord runs a callback of an empty header
        return
    group_id = uuid()
    parent = app.current_worker_task
    root_id = parent_id = None
    if parent is not None:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    callback.freeze(uuid(), group_id=group_id, root_id=root_id)
    task_ids = [uuid() for _ in header]
    # Redis saves nothing for a header of plain tasks: its apply_chord would only build the
    # group's results, and its join reads no part's stored result
    joins_parts = isinstance(app.backend, RedisBackend)
    if not joins_parts:
        app.backend.apply_chord((group_id, [app.AsyncResult(tid) for tid in task_ids]), callback)
    app.backend.set_chord_size(group_id, len(header))  # the size the parts count to
    queue = app.amqp.queues[queue_name]
    delivery_mode = queue.exchange.delivery_mode or app.conf.task_default_delivery_mode
    origin = anon_nodename()
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(queue)  # once per connection: RabbitMQ drops a message to no queue
        with producer.batch(max_size=len(header)):
            for index, (task_id, (args, argsrepr)) in enumerate(zip(task_ids, header, strict=True)):
                headers, properties, body, _ = app.amqp.create_task_message(
                    task_id, task, args, {}, group_id=group_id, group_index=index, chord=callback,
                    root_id=root_id, parent_id=parent_id, argsrepr=argsrepr, kwargsrepr="{}",
                    origin=origin, ignore_result=joins_parts,
                )  # fmt: skip
                headers[SENT_HEADER] = time.time()  # what before_task_publish stamps on the others
                producer.publish(
                    dumps(body), exchange="", routing_key=queue.name, headers=headers,
                    content_type="application/json", content_encoding="utf-8",
                    delivery_mode=delivery_mode, retry=False, **properties,
                )  # fmt: skip
