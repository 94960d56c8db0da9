"""Structured logs: every record inside a task carries its job id, attempt and task; with
`TIERFLOW_LOG_FORMAT=json` each is one JSON object per line.

`install(settings)` (called by `create_app`) connects Celery's task signals once per
process: before a task its ids go into a context variable that a filter copies onto every
record, and after it one `task finished` event is logged with its state and duration.
Ids only: never a payload, a prompt or a key.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from tierflow.worker.settings import Settings

FIELDS = ("job_id", "batch_id", "attempt", "expert", "task", "task_id", "state", "duration_s")
_ids: ContextVar[dict[str, Any]] = ContextVar("tierflow_log_ids", default={})  # noqa: B039 - never mutated
_started: dict[str, float] = {}
_installed: list[bool] = []
log = logging.getLogger("tierflow.events")


class IdsFilter(logging.Filter):
    """Copies the ids of the running task (or request) onto each record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _ids.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the ids it carries."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update(
            {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}
        )
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False, default=str)


@contextmanager
def log_ids(**ids: Any) -> Iterator[None]:
    """Records logged inside the block carry these ids."""
    token = _ids.set({**_ids.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _ids.reset(token)


def current_ids() -> dict[str, Any]:
    """The ids of the running task or request (worker.tracing copies them onto spans)."""
    return dict(_ids.get())


_signatures: dict[str, inspect.Signature] = {}


def task_ids(task: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """job_id, attempt and expert from a task's arguments, by their names in its signature."""
    try:
        signature = _signatures.get(task.name)
        if signature is None:  # inspect builds it anew on every call: once per task here
            signature = _signatures[task.name] = inspect.signature(task.run)
        bound = signature.bind_partial(*(args or ()), **(kwargs or {}))
    except (TypeError, ValueError):
        return {}
    named = bound.arguments
    ids = {"job_id": named.get("job_id"), "attempt": named.get("attempt"), "expert": named.get("name")}
    return {k: v for k, v in ids.items() if isinstance(v, str | int)}


def _before(task_id: str, task: Any, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    _ids.set({"task": task.name, "task_id": task_id, **task_ids(task, args, kwargs)})
    _started[task_id] = time.monotonic()


def _after(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id, None)
    duration = round(time.monotonic() - started, 4) if started is not None else None
    log.info("task finished", extra={"state": state, "duration_s": duration})
    _ids.set({})


def use_format(logger: logging.Logger, settings: Settings) -> None:
    """Give the logger's handlers the ids filter, and the JSON format when it is asked for."""
    for handler in logger.handlers:
        handler.addFilter(IdsFilter())
        if settings.log_format == "json":
            handler.setFormatter(JsonFormatter())


def install(settings: Settings) -> None:
    """Connect the task signals (once per process) and the format of the worker's log handlers."""
    if _installed:
        return
    from celery import signals

    signals.task_prerun.connect(_before, weak=False)
    signals.task_postrun.connect(_after, weak=False)
    signals.after_setup_logger.connect(lambda logger, **_: use_format(logger, settings), weak=False)
    signals.after_setup_task_logger.connect(lambda logger, **_: use_format(logger, settings), weak=False)
    _installed.append(True)


def configure_process(settings: Settings, level: int = logging.INFO) -> None:
    """Outside a Celery worker (`tierflow serve`): tierflow's loggers to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.addFilter(IdsFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger("tierflow")
    root.addHandler(handler)
    root.setLevel(level)
