"""The Batch API's lifecycle: validating -> in_progress -> finalizing -> completed, or failed,
or cancelling -> cancelled.

A batch is validated after `POST /v1/batches` answers; every line must be good or none is
stored (the errors are OpenAI's list, with line numbers). Its lines then become the jobs of
one tierflow batch, submitted as `tierflow submit` submits. Reading a batch moves it on: when
every job has ended, its output and error files are written once (to a temporary name, then
renamed) and it is completed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tierflow.api.shapes import LineError, line_job, output_line, unix
from tierflow.client import Client
from tierflow.routing.errors import TierflowError
from tierflow.routing.kinds.registry import KindRegistry
from tierflow.routing.states import JobState
from tierflow.store.api_batches import (
    add_requests,
    cancel_jobs,
    job_states,
    move_batch,
    new_id,
    request_outcomes,
)
from tierflow.store.db import transaction
from tierflow.store.models import ApiBatch, ApiFile, utcnow
from tierflow.tasks.submission import submit_lines
from tierflow.worker.logs import log_ids
from tierflow.worker.tracing import traced

log = logging.getLogger("tierflow.api")
MAX_LISTED_ERRORS = 1000
ENDED = frozenset({"completed", "failed", "cancelled", "expired"})


def request_job_id(batch_id: str, custom_id: str) -> str:
    return "oa-" + hashlib.sha256(f"{batch_id}\n{custom_id}".encode()).hexdigest()[:32]


def read_input(
    path: Path, batch_id: str, tenant: str | None, ladder: tuple[str, ...], kinds: KindRegistry | None = None
) -> tuple[list[str], list[tuple[int, str]], list[LineError]]:
    """The job lines (blank where the input line is blank), (line, custom_id) pairs, and errors."""
    lines: list[str] = []
    requests: list[tuple[int, str]] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        lines.append("")
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            errors.append(LineError(number, "<line>", f"not valid JSON: {exc}", "invalid_json_line"))
            continue
        custom = record.get("custom_id") if isinstance(record, dict) else None
        try:
            custom_id, job = line_job(record, request_job_id(batch_id, str(custom)), tenant, kinds, ladder)
        except ValueError as exc:
            param, _, message = str(exc).partition(": ")
            errors.append(LineError(number, param, message))
            continue
        if custom_id in seen:
            errors.append(
                LineError(number, "custom_id", f"duplicate of line {seen[custom_id]}", "duplicate_custom_id")
            )
            continue
        seen[custom_id] = number
        lines[-1] = json.dumps(job, ensure_ascii=False)
        requests.append((number, custom_id))
    return lines, requests, errors


def _errors(errors: list[LineError]) -> dict[str, Any]:
    return {"object": "list", "data": [e.as_openai() for e in errors[:MAX_LISTED_ERRORS]]}


class BatchRunner:
    """Moves Batch API batches through their states, on the client's store and broker."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.files_dir = client.settings.api_files_dir

    def _session(self) -> Any:
        return transaction(self.client.runtime.sessions)

    def validate(self, batch_id: str) -> None:
        """Validate the input file and submit its lines; on any error the batch fails, storing no job."""
        try:
            with log_ids(batch_id=batch_id), traced("tierflow.batch.validate", api_batch_id=batch_id):
                self._validate(batch_id)
        except (TierflowError, OSError) as exc:
            log.warning("batch %s failed in validating: %s", batch_id, exc, extra={"batch_id": batch_id})
            with self._session() as session:
                error = LineError(0, "<batch>", str(exc), "validation_failed")
                move_batch(
                    session, batch_id, ["validating"], "failed", errors=_errors([error]), failed_at=utcnow()
                )

    def _validate(self, batch_id: str) -> None:
        with self._session() as session:
            row = session.get(ApiBatch, batch_id)
            assert row is not None
            source = session.get(ApiFile, row.input_file_id)
            assert source is not None
            tenant, path = row.tenant, Path(source.path)
        ladder = tuple(tier.value for tier in self.client.settings.ladder)
        lines, requests, errors = read_input(path, batch_id, tenant, ladder, self.client.runtime.kinds)
        limit = self.client.settings.api_max_batch_requests
        if len(requests) > limit:
            errors.append(LineError(0, "<file>", f"{len(requests)} requests exceed the limit of {limit}"))
        if not requests and not errors:
            errors.append(LineError(0, "<file>", "the file holds no requests", "empty_file"))
        if not errors:
            report = submit_lines(self.client.app, self.client.runtime, f"openai:{batch_id}", lines)
            errors = [LineError(i.line, i.field, i.reason) for i in report.rejected]
        if errors:
            with self._session() as session:
                move_batch(
                    session, batch_id, ["validating"], "failed", errors=_errors(errors), failed_at=utcnow()
                )
            return
        self._start(batch_id, report.batch_id, requests)

    def _start(self, batch_id: str, job_batch_id: str | None, requests: list[tuple[int, str]]) -> None:
        rows = [(line, custom, request_job_id(batch_id, custom)) for line, custom in requests]
        with self._session() as session:
            add_requests(session, batch_id, rows)
            values = {"job_batch_id": job_batch_id, "total": len(rows)}
            if not move_batch(
                session, batch_id, ["validating"], "in_progress", in_progress_at=utcnow(), **values
            ):
                # cancelled while validating: the jobs are stored, so stop them
                move_batch(session, batch_id, ["cancelling"], "cancelling", **values)
                assert job_batch_id is not None
                cancel_jobs(session, job_batch_id)
        log.info("batch %s in progress: %d requests", batch_id, len(rows), extra={"batch_id": batch_id})

    def counts(self, session: Session, row: ApiBatch) -> tuple[dict[str, int], bool]:
        """request_counts, and whether every job of the batch has ended."""
        if row.job_batch_id is None:
            return {"total": row.total, "completed": 0, "failed": 0}, False
        states = job_states(session, row.job_batch_id)
        completed = states.get(JobState.SUCCEEDED.value, 0)
        ended = sum(n for state, n in states.items() if JobState(state).terminal)
        counts = {"total": row.total, "completed": completed, "failed": ended - completed}
        return counts, ended >= row.total

    def refresh(self, batch_id: str) -> dict[str, int]:
        """Finish the batch if every job has ended; its request_counts now."""
        with self._session() as session:
            row = session.get(ApiBatch, batch_id)
            assert row is not None
            counts, ended = self.counts(session, row)
            status = row.status
        if ended and status in ("in_progress", "cancelling"):
            self._finalize(batch_id, status)
        return counts

    def cancel(self, batch_id: str) -> None:
        with self._session() as session:
            moved = move_batch(
                session, batch_id, ["validating", "in_progress"], "cancelling", cancelling_at=utcnow()
            )
            row = session.get(ApiBatch, batch_id)
            if moved and row is not None and row.job_batch_id is not None:
                stopped = cancel_jobs(session, row.job_batch_id)
                log.info(
                    "batch %s cancelling: %d jobs stopped", batch_id, stopped, extra={"batch_id": batch_id}
                )

    def _finalize(self, batch_id: str, status: str) -> None:
        final = "completed" if status == "in_progress" else "cancelled"
        with self._session() as session:
            if final == "completed" and not move_batch(
                session, batch_id, ["in_progress"], "finalizing", finalizing_at=utcnow()
            ):
                return  # another request is finalizing it
            row = session.get(ApiBatch, batch_id)
            assert row is not None
            tenant, outcomes = row.tenant, request_outcomes(session, batch_id)
        created = unix(utcnow()) or 0
        lines = [output_line(outcome, created) for outcome in outcomes]
        output = self._write(tenant, batch_id, "batch_output", [x for x in lines if x["error"] is None])
        errors = self._write(tenant, batch_id, "batch_error", [x for x in lines if x["error"] is not None])
        with self._session() as session:
            session.add_all(f for f in (output, errors) if f is not None)
            session.flush()
            ended = {"completed_at" if final == "completed" else "cancelled_at": utcnow()}
            move_batch(
                session,
                batch_id,
                ["finalizing", "cancelling"],
                final,
                output_file_id=output.id if output else None,
                error_file_id=errors.id if errors else None,
                **ended,
            )
        log.info("batch %s %s", batch_id, final, extra={"batch_id": batch_id})

    def _write(
        self, tenant: str | None, batch_id: str, purpose: str, lines: list[dict[str, Any]]
    ) -> ApiFile | None:
        if not lines:
            return None
        file_id = new_id("file-")
        self.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.files_dir / f"{file_id}.jsonl"
        partial = path.with_suffix(".partial")
        with partial.open("w", encoding="utf-8") as out:
            for line in lines:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        os.replace(partial, path)
        name = f"{batch_id}_{'output' if purpose == 'batch_output' else 'error'}.jsonl"
        return ApiFile(
            id=file_id,
            tenant=tenant,
            filename=name,
            purpose=purpose,
            bytes=path.stat().st_size,
            path=str(path),
        )
