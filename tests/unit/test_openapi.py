"""The committed OpenAPI document is the one the API serves."""

from __future__ import annotations

import json
from pathlib import Path

from tierflow.api.app import openapi_document

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_openapi_document_matches_the_api() -> None:
    committed = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert committed == openapi_document(), "regenerate it: tierflow serve --openapi > docs/openapi.json"


def test_the_document_describes_the_openai_and_native_endpoints() -> None:
    paths = openapi_document()["paths"]
    for path in (
        "/v1/files",
        "/v1/files/{file_id}/content",
        "/v1/batches",
        "/v1/batches/{batch_id}/cancel",
        "/v1/chat/completions",
        "/v1/tierflow/batches",
        "/v1/tierflow/batches/{batch_id}/results",
        "/v1/tierflow/jobs/{job_id}",
        "/v1/tierflow/reviews/{job_id}",
    ):
        assert path in paths, path
