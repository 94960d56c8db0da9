"""OpenAI's Files and Batch endpoints, so the official SDK works with `base_url` set to tierflow."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from tierflow.api.auth import ApiError, caller_tenant, not_found
from tierflow.api.batches import ENDED, BatchRunner
from tierflow.api.shapes import CHAT_URL, batch_object, file_object
from tierflow.store.api_batches import get_batch, get_file, list_batches, new_id
from tierflow.store.db import transaction
from tierflow.store.models import ApiBatch, ApiFile, utcnow

router = APIRouter(prefix="/v1", tags=["openai"])
log = logging.getLogger("tierflow.api")
Tenant = Annotated[str | None, Depends(caller_tenant)]
CHUNK = 1024 * 1024


class BatchCreate(BaseModel):
    input_file_id: str
    endpoint: str
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)


def _runner(request: Request) -> BatchRunner:
    runner: BatchRunner = request.app.state.runner
    return runner


def _copy_upload(upload: UploadFile, path: str, limit: int) -> int:
    """Copy the upload to `path` a chunk at a time; 413 (and nothing kept) past `limit` bytes."""
    size = 0
    partial = path + ".partial"
    with open(partial, "wb") as out:
        while chunk := upload.file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                out.close()
                os.unlink(partial)
                raise ApiError(413, f"the file exceeds the limit of {limit} bytes", "file_too_large", "file")
            out.write(chunk)
    os.replace(partial, path)
    return size


@router.post("/files", summary="Upload a batch input file (purpose batch)")
def upload_file(
    request: Request, tenant: Tenant, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
) -> dict[str, Any]:
    if purpose != "batch":
        raise ApiError(400, f"purpose {purpose!r} is not accepted: use batch", "invalid_purpose", "purpose")
    runner = _runner(request)
    runner.files_dir.mkdir(parents=True, exist_ok=True)
    file_id = new_id("file-")
    path = str(runner.files_dir / f"{file_id}.jsonl")
    size = _copy_upload(file, path, runner.client.settings.api_max_upload_bytes)
    name = os.path.basename(file.filename or "input.jsonl")[:512]
    row = ApiFile(
        id=file_id, tenant=tenant, filename=name, purpose="batch", bytes=size, path=path, created_at=utcnow()
    )
    with transaction(runner.client.runtime.sessions) as session:
        session.add(row)
    log.info("file %s uploaded: %d bytes", file_id, size)
    return file_object(row)


def _file(request: Request, tenant: str | None, file_id: str) -> ApiFile:
    with transaction(_runner(request).client.runtime.sessions) as session:
        row = get_file(session, tenant, file_id)
    if row is None:
        raise not_found("file", file_id)
    return row


@router.get("/files/{file_id}", summary="A file's metadata")
def read_file(request: Request, tenant: Tenant, file_id: str) -> dict[str, Any]:
    return file_object(_file(request, tenant, file_id))


@router.get("/files/{file_id}/content", summary="A file's content", response_class=FileResponse)
def read_file_content(request: Request, tenant: Tenant, file_id: str) -> FileResponse:
    row = _file(request, tenant, file_id)
    return FileResponse(row.path, media_type="application/jsonl", filename=row.filename)


def _batch(request: Request, tenant: str | None, batch_id: str) -> dict[str, Any]:
    runner = _runner(request)
    with transaction(runner.client.runtime.sessions) as session:
        found = get_batch(session, tenant, batch_id) is not None
    if not found:
        raise not_found("batch", batch_id)
    counts = runner.refresh(batch_id)
    with transaction(runner.client.runtime.sessions) as session:
        row = session.get(ApiBatch, batch_id)
        assert row is not None
        if row.status in ENDED:
            counts, _ = runner.counts(session, row)
        return batch_object(row, counts)


@router.post("/batches", summary="Create a batch from an uploaded file")
def create_batch(
    request: Request, tenant: Tenant, body: BatchCreate, tasks: BackgroundTasks
) -> dict[str, Any]:
    if body.endpoint != CHAT_URL:
        raise ApiError(
            400, f"endpoint {body.endpoint!r} is not served: use {CHAT_URL}", "invalid_endpoint", "endpoint"
        )
    runner = _runner(request)
    with transaction(runner.client.runtime.sessions) as session:
        source = get_file(session, tenant, body.input_file_id)
        if source is None or source.purpose != "batch":
            raise not_found("file", body.input_file_id)
        row = ApiBatch(
            id=new_id("batch_"),
            tenant=tenant,
            input_file_id=source.id,
            endpoint=body.endpoint,
            completion_window=body.completion_window,
            status="validating",
            total=0,
            meta=body.metadata,
            created_at=utcnow(),
        )
        session.add(row)
    tasks.add_task(runner.validate, row.id)
    return batch_object(row, {"total": 0, "completed": 0, "failed": 0})


@router.get("/batches/{batch_id}", summary="A batch, moved on if its jobs have ended")
def read_batch(request: Request, tenant: Tenant, batch_id: str) -> dict[str, Any]:
    return _batch(request, tenant, batch_id)


@router.get("/batches", summary="Batches, newest first")
def read_batches(
    request: Request,
    tenant: Tenant,
    after: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    with transaction(_runner(request).client.runtime.sessions) as session:
        ids = [row.id for row in list_batches(session, tenant, after, limit + 1)]
    data = [_batch(request, tenant, batch_id) for batch_id in ids[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ids) > limit,
    }


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch: its jobs that have not ended are stopped")
def cancel_batch(request: Request, tenant: Tenant, batch_id: str) -> dict[str, Any]:
    runner = _runner(request)
    with transaction(runner.client.runtime.sessions) as session:
        found = get_batch(session, tenant, batch_id) is not None
    if not found:
        raise not_found("batch", batch_id)
    runner.cancel(batch_id)
    return _batch(request, tenant, batch_id)
