"""tierflow: an asynchronous LLM job router on Celery.

This module is the public surface; everything below `tierflow.` that `__all__`
does not name is internal and may change between releases. The repository's
folders (`routing/`, `providers/`, `store/`, `tasks/`, `worker/`,
`migrations/`) are this package's subpackages (`tierflow.routing`, ...): the
installed distribution has this one import root and nothing else.

Names are loaded on first use (PEP 562), so that `import tierflow.routing`
stays free of Celery, SQLAlchemy and the SDKs (tests/unit/test_layering.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Batch",
    "BatchRejected",
    "Client",
    "ConfigError",
    "InputError",
    "JobMetadata",
    "JobResult",
    "JobSpec",
    "ProviderError",
    "ServiceUnavailable",
    "Settings",
    "TierflowError",
    "__version__",
]

_EXPORTS = {
    "AsyncClient": "tierflow.client",
    "Batch": "tierflow.client",
    "Client": "tierflow.client",
    "JobResult": "tierflow.client",
    "BatchRejected": "tierflow.routing.errors",
    "ConfigError": "tierflow.routing.errors",
    "InputError": "tierflow.routing.errors",
    "ProviderError": "tierflow.routing.errors",
    "ServiceUnavailable": "tierflow.routing.errors",
    "TierflowError": "tierflow.routing.errors",
    "JobMetadata": "tierflow.routing.jobs",
    "JobSpec": "tierflow.routing.jobs",
    "Settings": "tierflow.worker.settings",
}

if TYPE_CHECKING:
    from tierflow.client import AsyncClient, Batch, Client, JobResult
    from tierflow.routing.errors import (
        BatchRejected,
        ConfigError,
        InputError,
        ProviderError,
        ServiceUnavailable,
        TierflowError,
    )
    from tierflow.routing.jobs import JobMetadata, JobSpec
    from tierflow.worker.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tierflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
