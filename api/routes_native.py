"""tierflow's own endpoints, for what OpenAI has no shape for: JobSpec batches, their status and
results (JSON Lines or CSV, streamed), a job's explanation, feedback, and the review queue."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from tierflow.api.auth import ApiError, caller_tenant, not_found
from tierflow.client import Client
from tierflow.routing.errors import BatchRejected, InputError
from tierflow.store.api_batches import get_job, job_tenant, owns_job_batch
from tierflow.store.db import transaction
from tierflow.store.models import Job

router = APIRouter(prefix="/v1/tierflow", tags=["tierflow"])
Tenant = Annotated[str | None, Depends(caller_tenant)]


class JobsSubmit(BaseModel):
    jobs: list[Any] = Field(description="JobSpec objects, as the lines of `tierflow submit`")
    skip_invalid: bool = False


class FeedbackBody(BaseModel):
    correct: bool | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    note: str | None = Field(default=None, max_length=4000)


class ReviewDecision(BaseModel):
    accept: bool
    note: str | None = Field(default=None, max_length=4000)


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def _scoped(job: Any, tenant: str | None) -> Any:
    """A job of a tenant: its metadata names the tenant, and its id is prefixed `tenant.`."""
    if tenant is None or not isinstance(job, dict):
        return job
    given = job.get("metadata")
    if given is not None and not isinstance(given, dict):
        return job  # refused by the JobSpec validation, naming metadata
    metadata: dict[str, Any] = given or {}
    scoped = {**job, "metadata": {**metadata, "tenant": tenant}}
    if isinstance(job.get("id"), str):
        scoped["id"] = f"{tenant}.{job['id']}"
    return scoped


@router.post("/batches", summary="Submit JobSpecs as one batch (idempotent on job id)")
def submit_jobs(request: Request, tenant: Tenant, body: JobsSubmit) -> dict[str, Any]:
    try:
        batch = _client(request).submit([_scoped(job, tenant) for job in body.jobs], body.skip_invalid, "api")
    except BatchRejected as exc:
        raise ApiError(400, str(exc), "invalid_jobs", "jobs", issues=exc.issues) from None
    return {
        "batch_id": batch.batch_id,
        "accepted": batch.accepted,
        "duplicates": batch.duplicates,
        "rejected": batch.rejected,
    }


def _require_batch(client: Client, tenant: str | None, batch_id: str) -> None:
    with transaction(client.runtime.sessions) as session:
        if not owns_job_batch(session, tenant, batch_id):
            raise not_found("batch", batch_id)


@router.get("/batches/{batch_id}", summary="A batch's counts per state and per tier")
def batch_status(request: Request, tenant: Tenant, batch_id: str) -> dict[str, Any]:
    client = _client(request)
    _require_batch(client, tenant, batch_id)
    status = client.batch_status(batch_id)
    return {
        "batch_id": batch_id,
        "total": status.total,
        "by_state": status.by_state,
        "by_tier": status.by_tier,
    }


def _csv_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["job_id"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


@router.get("/batches/{batch_id}/results", summary="One row per job, as `tierflow results` (streamed)")
def batch_results(
    request: Request,
    tenant: Tenant,
    batch_id: str,
    format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",  # noqa: A002 - the CLI's option name
) -> StreamingResponse:
    client = _client(request)
    _require_batch(client, tenant, batch_id)
    rows = [dataclasses.asdict(row) for row in client.batch_results(batch_id)]
    if format == "csv":
        return StreamingResponse(_csv_lines(rows), media_type="text/csv")
    lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return StreamingResponse(lines, media_type="application/jsonl")


def _require_job(client: Client, tenant: str | None, job_id: str) -> None:
    with transaction(client.runtime.sessions) as session:
        if get_job(session, tenant, job_id) is None:
            raise not_found("job", job_id)


@router.get("/jobs/{job_id}", summary="A job's whole path, as `tierflow explain --json`")
def explain_job(request: Request, tenant: Tenant, job_id: str) -> dict[str, Any]:
    client = _client(request)
    _require_job(client, tenant, job_id)
    return client.explain(job_id)


@router.post("/jobs/{job_id}/feedback", summary="A person's judgement of a job's final answer")
def job_feedback(request: Request, tenant: Tenant, job_id: str, body: FeedbackBody) -> dict[str, Any]:
    client = _client(request)
    _require_job(client, tenant, job_id)
    try:
        client.feedback(job_id, body.correct, body.rating, body.note)
    except InputError as exc:
        raise ApiError(400, exc.reason, "invalid_feedback", exc.field) from None
    return {"job_id": job_id, "recorded": True}


@router.get("/reviews", summary="Jobs held for a person, oldest first")
def list_reviews(
    request: Request, tenant: Tenant, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    client = _client(request)
    rows = client.reviews(limit)
    with transaction(client.runtime.sessions) as session:
        jobs = session.query(Job).filter(Job.id.in_([row["job_id"] for row in rows])).all()
        tenants = {job.id: job_tenant(job) for job in jobs}
    visible = [row for row in rows if tenant is None or tenants.get(row["job_id"]) == tenant]
    return {"object": "list", "data": visible}


@router.post("/reviews/{job_id}", summary="Decide on a held job: accept its answer or reject it")
def decide_review(request: Request, tenant: Tenant, job_id: str, body: ReviewDecision) -> dict[str, Any]:
    client = _client(request)
    _require_job(client, tenant, job_id)
    try:
        client.review(job_id, body.accept, body.note)
    except InputError as exc:
        raise ApiError(409, exc.reason, "not_held", "job_id") from None
    return {"job_id": job_id, "state": "succeeded" if body.accept else "failed"}
