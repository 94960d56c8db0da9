"""Worker leases: every message is stamped when published, and every worker beats.

- `stamp_publish` (Celery's before_task_publish) puts the publish time in each
  tierflow message's headers, for messages Celery sends itself too (a chord's callback).
- `note_received` (task_received, in the process that consumes) keeps, per queue,
  the newest publish time among the messages this worker has been handed.
- A beat thread, started with the first message, writes every `lease_s / 3`
  seconds which jobs this worker holds (every request it has received and not
  finished: waiting for a slot, waiting for its countdown, or running) and those
  publish times. A held job's lease lasts `lease_s` from the beat; a worker that
  dies stops beating, and its jobs are sent again once their lease lapses.

The beat comes from the worker's main process, not from the task: a task blocked in
a five-minute model call is still held. It has its own connection without a pool,
so that nothing it opens crosses into a forked pool process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from celery import signals
from celery.worker import state
from sqlalchemy import Engine

from tierflow.store.db import make_engine, make_sessions, transaction
from tierflow.store.leases import end_beat, record_beat

log = logging.getLogger(__name__)

SENT_HEADER = "tierflow_sent_at"
# Which argument of each task names its job (a chord's callback gets the experts' markers first).
JOB_ARGUMENT = {"tierflow.classify": 0, "tierflow.run_job": 0, "tierflow.expert": 0, "tierflow.aggregate": 1}


def job_of(task: str, args: Any) -> str | None:
    index = JOB_ARGUMENT.get(task)
    if index is None or not isinstance(args, list | tuple) or len(args) <= index:
        return None
    job_id = args[index]
    return job_id if isinstance(job_id, str) else None


class Beat:
    """This process's heartbeat: what it has received, and the thread that reports what it holds."""

    def __init__(self, app: Any) -> None:
        settings = app.tierflow_settings
        self.lease_s: float = settings.lease_s
        self.worker = f"{socket.gethostname()}/{os.getpid()}"
        self.received: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._engine: Engine = make_engine(settings.database_url, pooled=False)
        self._sessions = make_sessions(self._engine)
        self._thread = threading.Thread(target=self._run, name="tierflow-beat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def note(self, queue: str, sent_at: float) -> None:
        with self._lock:
            if sent_at > self.received.get(queue, 0.0):
                self.received[queue] = sent_at

    def holding(self) -> list[str]:
        for _ in range(5):
            try:
                requests = list(state.requests.values())
                break
            except RuntimeError:  # the consumer changed the dict while it was copied: again
                continue
        else:
            requests = []
        jobs = {job_of(r.task_name, r.args) for r in requests}
        return sorted(job for job in jobs if job is not None)

    def beat(self) -> None:
        with self._lock:
            received = dict(self.received)
        with transaction(self._sessions) as session:
            record_beat(session, self.worker, self.lease_s, self.holding(), received)

    def stop(self) -> None:
        self._stop.set()
        try:
            with transaction(self._sessions) as session:
                end_beat(session, self.worker)
        except Exception:  # noqa: BLE001 - a worker stopping without its database lets the lease lapse
            log.warning(
                "beat: could not give up the leases of %s; they lapse in %ss", self.worker, self.lease_s
            )
        self._engine.dispose()

    def _run(self) -> None:
        interval = self.lease_s / 3
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the lease covers three
                log.warning("beat: %s could not record its leases: %s", self.worker, type(exc).__name__)


_beats: dict[tuple[int, int], Beat] = {}
_beats_lock = threading.Lock()


def beat_for(app: Any) -> Beat:
    """This process's beat for `app`, started with the first message it receives."""
    key = (os.getpid(), id(app))
    with _beats_lock:
        beat = _beats.get(key)
        if beat is None:
            beat = _beats[key] = Beat(app)
            beat.start()
        return beat


@signals.before_task_publish.connect
def stamp_publish(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None and sender and sender.startswith("tierflow."):
        headers[SENT_HEADER] = time.time()


@signals.task_received.connect
def note_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    if request is None or not request.task_name.startswith("tierflow."):
        return
    app = getattr(sender, "app", None)
    if app is None or not hasattr(app, "tierflow_settings") or app.tierflow_settings.embedded:
        return
    queue = (request.delivery_info or {}).get("routing_key")
    sent_at = request.request_dict.get(SENT_HEADER)
    beat = beat_for(app)
    if queue and isinstance(sent_at, int | float):
        beat.note(queue, float(sent_at))


@signals.worker_shutdown.connect
def stop_beats(**_: Any) -> None:
    pid = os.getpid()
    with _beats_lock:
        mine = [key for key in _beats if key[0] == pid]
        stopping = [_beats.pop(key) for key in mine]
    for beat in stopping:
        beat.stop()
