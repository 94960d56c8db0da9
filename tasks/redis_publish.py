"""Classify messages on a Redis broker, many per LPUSH: a batch of jobs enqueued in bulk.

kombu's Redis transport turns each publish into one LPUSH of a JSON envelope (headers,
properties, the body in base64). For a batch of classify messages the envelopes differ
only in the task id, the delivery tag, the job id and the publish time, so the envelope
is built once, through kombu's own calls (`prepare_message`, the channel's
augmentation), with markers in those places; each job's message is then the envelope
with the markers filled in, and each PUSH_MESSAGES of them go in one LPUSH, which
leaves them in the list in the order one LPUSH each would. What a worker reads is what
`send_classify` would have written.

Used by tasks.dispatch.send_classify_many when the broker is Redis; any other
transport (or a queue with an expiry) publishes through kombu one message at a time.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from kombu.utils.json import dumps

from tierflow.tasks.leases import SENT_HEADER

PUSH_MESSAGES = 1000
# Markers that JSON and repr() leave as they are, and that no job id (routing.jobs.JobId:
# [A-Za-z0-9._:-]), uuid or number contains.
_TASK, _TAG, _JOB, _SENT, _BODY = (f"@@{name}@@" for name in ("task", "tag", "job", "sent", "body"))
_MARKERS = re.compile("@@(?:task|tag|job|sent|body)@@")
# Where they are in the envelope: the task id as id, root_id and correlation_id; the job id in argsrepr.
_EXPECTED = sorted([_TASK, _TASK, _TASK, _TAG, _JOB, _SENT, _BODY])


class _Template:
    """A string with markers, cut once; `fill` joins the pieces around the values."""

    def __init__(self, text: str) -> None:
        self.pieces = _MARKERS.split(text)
        self.slots = [match.group(0) for match in _MARKERS.finditer(text)]

    def fill(self, values: dict[str, str]) -> str:
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            out.append(values[slot])
            out.append(piece)
        return "".join(out)


def redis_channel(producer: Any) -> Any | None:
    """The producer's kombu Redis channel, or None when this fast path does not apply."""
    channel = producer.channel
    transport = getattr(getattr(channel, "connection", None), "driver_type", None)
    if transport != "redis" or getattr(channel, "body_encoding", None) != "base64":
        return None
    return channel


def _envelope(app: Any, channel: Any, queue: Any, origin: str) -> tuple[_Template, _Template, str] | None:
    """The message and body templates and the Redis list they go to; None if the queue expires."""
    if channel._expires and queue.name in channel._expires:  # kombu keeps the expiries there
        return None
    headers, properties, body, _ = app.amqp.create_task_message(
        _TASK, "tierflow.classify", (_JOB,), {}, ignore_result=True,
        argsrepr=repr((_JOB,)), kwargsrepr="{}", origin=origin,
    )  # fmt: skip
    headers[SENT_HEADER] = _SENT
    delivery_mode = queue.exchange.delivery_mode or app.conf.task_default_delivery_mode
    message = channel.prepare_message(
        b"", 0, "application/json", "utf-8", headers, {**properties, "delivery_mode": delivery_mode}
    )
    channel._inplace_augment_message(message, "", queue.name)  # kombu's own envelope
    message["body"] = _BODY
    message["properties"]["delivery_tag"] = _TAG
    key = channel._q_for_pri(queue.name, channel._get_message_priority(message, reverse=False))
    text = dumps(message).replace(json.dumps(_SENT), _SENT)  # the time goes in as a number
    envelope, inner = _Template(text), _Template(json.dumps(body))
    if sorted(envelope.slots) != _EXPECTED or inner.slots != [_JOB]:  # a marker met elsewhere
        return None
    return envelope, inner, str(key)


def push_classify(app: Any, channel: Any, queue: Any, origin: str, job_ids: Iterable[str]) -> int | None:
    """LPUSH one classify message per job; returns how many, or None to publish through kombu."""
    built = _envelope(app, channel, queue, origin)
    if built is None:
        return None
    message, body, key = built
    # conn_or_acquire, not channel.client: that client's connection may be the one this process
    # waits on in BRPOP (a control reply), whose reply an LPUSH's would then take.
    with channel.conn_or_acquire() as client:
        return _push(client, message, body, key, job_ids)


def _push(client: Any, message: Any, body: Any, key: str, job_ids: Iterable[str]) -> int:
    sent, chunk = 0, []
    for job_id in job_ids:
        task_id = str(uuid.uuid4())
        encoded = base64.b64encode(body.fill({_JOB: job_id}).encode()).decode()
        values = {
            _TASK: task_id,
            _TAG: str(uuid.uuid4()),
            _JOB: job_id,
            _SENT: repr(time.time()),
            _BODY: encoded,
        }
        chunk.append(message.fill(values))
        if len(chunk) >= PUSH_MESSAGES:
            client.lpush(key, *chunk)
            sent, chunk = sent + len(chunk), []
    if chunk:
        client.lpush(key, *chunk)
        sent += len(chunk)
    return sent
