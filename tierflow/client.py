"""The Python client: submit jobs from an application's own code, wait, read results.

`Client` runs on the same settings as the `tierflow` command and goes through the same
code: `tasks.submission.submit_lines` validates, stores (idempotent on job id) and
enqueues; `store.reports` reads batches back. In embedded mode (the default settings)
the client runs the worker in its own process while it is open (`with Client...`).
`AsyncClient` is the same client for asyncio applications (each call on a thread).

Must not import FastAPI or the CLI's typer apps at import time.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

from tierflow.routing.errors import BatchRejected, InputError
from tierflow.routing.jobs import JobSpec
from tierflow.routing.states import JobState
from tierflow.store.db import check_database, transaction
from tierflow.store.feedback import decide_review, record_feedback, review_queue
from tierflow.store.reports import BatchStatus, batch_exists, batch_results, batch_status
from tierflow.store.trace import job_trace
from tierflow.tasks.runtime import Runtime, forget_runtime, runtime_for
from tierflow.tasks.submission import SubmitReport, submit_lines
from tierflow.worker.app import TierflowCelery, create_app
from tierflow.worker.settings import Settings, load_settings
from tierflow.worker.tracing import traced

TERMINAL = frozenset(state.value for state in JobState if state.terminal)


@dataclass(frozen=True)
class JobResult:
    """One job of a batch: the fields of `tierflow results --format jsonl`."""

    job_id: str
    kind: str
    state: str
    tier_path: list[str]
    output: dict[str, Any] | None
    verdict: str | None
    quality: float | None
    cost_usd: float
    tokens: int
    latency_s: float | None
    error: str | None
    parent: str | None = None  # a decomposed job's child names it

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobResult:
        return cls(**row)


@dataclass
class Batch:
    """A submitted batch: its id, what the submission did, and ways to follow it."""

    client: Client = field(repr=False)
    batch_id: str
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, object]] = field(default_factory=list)

    def status(self) -> BatchStatus:
        """Counts per state and per tier, now."""
        return self.client.batch_status(self.batch_id)

    def done(self) -> bool:
        status = self.status()
        return sum(n for state, n in status.by_state.items() if state in TERMINAL) >= status.total

    def wait(self, timeout: float | None = None, progress: bool = False) -> BatchStatus:
        """Block until every job is terminal; raise TimeoutError after `timeout` seconds."""
        from tierflow.worker.cli import wait_for_batch

        limit = math.inf if timeout is None else timeout
        if not wait_for_batch(self.client.runtime, self.batch_id, limit, quiet=not progress):
            raise TimeoutError(f"batch {self.batch_id} not finished after {timeout}s")
        return self.status()

    def results(self) -> list[JobResult]:
        """One row per job, ordered by job id."""
        return self.client.batch_results(self.batch_id)


def _job_line(job: JobSpec | Mapping[str, Any]) -> str:
    body = job.model_dump(mode="json") if isinstance(job, JobSpec) else dict(job)
    return json.dumps(body, ensure_ascii=False)


def job_lines(jobs: Iterable[JobSpec | Mapping[str, Any]]) -> tuple[list[str], list[dict[str, object]]]:
    """JobSpecs and dicts as JSON Lines; an object that is neither, or not JSON, is an issue."""
    lines: list[str] = []
    issues: list[dict[str, object]] = []
    for index, job in enumerate(jobs):
        try:
            if not isinstance(job, JobSpec | Mapping):
                raise TypeError(f"a JobSpec or a dict is required, not {type(job).__name__}")
            lines.append(_job_line(job))
        except (TypeError, ValueError) as exc:
            issues.append({"index": index, "field": "<job>", "reason": str(exc)})
            lines.append("")  # keeps the numbering of the jobs after it
    return lines, issues


def _issues(report: SubmitReport) -> list[dict[str, object]]:
    return [{"index": i.line - 1, "field": i.field, "reason": i.reason} for i in report.rejected]


class Client:
    """tierflow from Python: `with Client.from_settings() as client: client.submit(jobs).wait()`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.app: TierflowCelery = create_app(self.settings)
        self.runtime: Runtime = runtime_for(self.app)
        self._stack: ExitStack | None = None

    @classmethod
    def from_settings(cls, **overrides: Any) -> Client:
        """The settings `tierflow` reads (TIERFLOW_* variables, TIERFLOW_CONFIG), with `overrides`."""
        return cls(load_settings(**overrides))

    def start(self) -> None:
        """Check the database; in embedded mode migrate it and start the in-process worker."""
        if self._stack is not None:
            return
        check_database(self.runtime.engine)
        stack = ExitStack()
        if self.settings.embedded:
            from tierflow.worker.embedded import embedded_worker

            stack.enter_context(embedded_worker(self.app, self.runtime))
        else:
            from tierflow.worker.cli_ops import require_schema

            require_schema(self.runtime.engine)
        self._stack = stack

    def close(self) -> None:
        """Stop the in-process worker (embedded mode) and close the database pool."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        forget_runtime(self.app)
        self.runtime.engine.dispose()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        jobs: Iterable[JobSpec | Mapping[str, Any]],
        skip_invalid: bool = False,
        source: str = "client",
    ) -> Batch:
        """Validate, store and enqueue jobs as one batch; raise BatchRejected if any is invalid.

        A job id already stored with the same content is not stored or run again.
        """
        self.start()
        lines, issues = job_lines(jobs)
        if issues and not skip_invalid:
            raise BatchRejected(source, issues)
        with traced("tierflow.submit", source=source) as span:
            report = submit_lines(self.app, self.runtime, source, lines, skip_invalid=skip_invalid)
            if span is not None and report.batch_id is not None:
                span.set_attribute("tierflow.batch_id", report.batch_id)
        rejected = sorted(issues + _issues(report), key=lambda issue: int(str(issue["index"])))
        if report.batch_id is None:
            raise BatchRejected(source, rejected)
        return Batch(self, report.batch_id, report.accepted, report.duplicates, rejected)

    def batch(self, batch_id: str) -> Batch:
        """A batch submitted earlier (by any client or `tierflow submit`)."""
        with self._session() as session:
            if not batch_exists(session, batch_id):
                raise InputError("tierflow client", 0, "batch", f"no batch {batch_id!r}")
        return Batch(self, batch_id)

    def batch_status(self, batch_id: str) -> BatchStatus:
        with self._session() as session:
            return batch_status(session, batch_id)

    def batch_results(self, batch_id: str) -> list[JobResult]:
        with self._session() as session:
            return [JobResult.from_row(row) for row in batch_results(session, batch_id)]

    def explain(self, job_id: str) -> dict[str, Any]:
        """The whole path of a job, as `tierflow explain --json` prints it."""
        with self._session() as session:
            trace = job_trace(session, job_id)
        if trace is None:
            raise InputError("tierflow client", 0, "job", f"no job {job_id!r}")
        return trace

    def feedback(
        self, job_id: str, correct: bool | None = None, rating: int | None = None, note: str | None = None
    ) -> None:
        """A person's judgement of a job's final answer: correct or not, and/or a rating 1..5."""
        if correct is None and rating is None:
            raise InputError("tierflow client", 0, "feedback", "give correct or rating")
        if rating is not None and not 1 <= rating <= 5:
            raise InputError("tierflow client", 0, "rating", "a rating is 1 to 5")
        score = None if rating is None else (rating - 1) / 4
        with self._session() as session:
            record_feedback(session, job_id, "human", correct, score, note)

    def reviews(self, limit: int = 100) -> list[dict[str, Any]]:
        """Jobs held for a person, oldest first."""
        with self._session() as session:
            return review_queue(session, limit)

    def review(self, job_id: str, accept: bool, note: str | None = None) -> None:
        """Decide on a held job: accept its answer, or reject it (the job fails)."""
        with self._session() as session:
            decide_review(session, job_id, accept, note)

    @contextmanager
    def _session(self) -> Iterator[Any]:
        with transaction(self.runtime.sessions) as session:
            yield session


@dataclass
class AsyncBatch:
    """A `Batch` for asyncio: the same calls, awaited."""

    batch: Batch
    poll_s: float = 0.25

    @property
    def batch_id(self) -> str:
        return self.batch.batch_id

    async def status(self) -> BatchStatus:
        return await asyncio.to_thread(self.batch.status)

    async def wait(self, timeout: float | None = None) -> BatchStatus:
        """Await until every job is terminal; raise TimeoutError after `timeout` seconds."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while not await asyncio.to_thread(self.batch.done):
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {self.batch_id} not finished after {timeout}s")
            await asyncio.sleep(self.poll_s)
        return await self.status()

    async def results(self) -> list[JobResult]:
        return await asyncio.to_thread(self.batch.results)


class AsyncClient:
    """`Client` for asyncio applications: `async with AsyncClient.from_settings() as client`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.sync = Client(settings)

    @classmethod
    def from_settings(cls, **overrides: Any) -> AsyncClient:
        return cls(load_settings(**overrides))

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.sync.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.sync.close)

    async def submit(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], skip_invalid: bool = False
    ) -> AsyncBatch:
        batch = await asyncio.to_thread(self.sync.submit, list(jobs), skip_invalid)
        return AsyncBatch(batch)

    async def explain(self, job_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.explain, job_id)

    async def feedback(
        self, job_id: str, correct: bool | None = None, rating: int | None = None, note: str | None = None
    ) -> None:
        await asyncio.to_thread(self.sync.feedback, job_id, correct, rating, note)

    async def reviews(self, limit: int = 100) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.reviews, limit)

    async def review(self, job_id: str, accept: bool, note: str | None = None) -> None:
        await asyncio.to_thread(self.sync.review, job_id, accept, note)
