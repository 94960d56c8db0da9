"""`tierflow demo`: the example batches through the whole pipeline, in embedded mode.

No API keys and no servers: the tiers' OpenAI and Anthropic models are served by
the local provider server on loopback, called through the official SDKs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.providers.server import ProviderServer
from tierflow.store.db import transaction
from tierflow.store.reports import batch_results, summarize
from tierflow.tasks.submission import SubmitReport, read_lines, submit_file
from tierflow.worker.app import create_app
from tierflow.worker.settings import load_settings

if TYPE_CHECKING:
    from tierflow.tasks.reflect import ReflectRun

EXAMPLES = ("examples/support.jsonl", "examples/documents.jsonl", "examples/prompts.jsonl")

# Model names with public list prices (providers/pricing.py); the provider server plays them
# with the strengths of a small, a medium and a large model.
DEMO_TIERS = {
    "small": ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
    "medium": ["openai:gpt-4o"],
    "large": ["anthropic:claude-sonnet-4-5"],
}
DEMO_STRENGTHS = {"gpt-4o-mini": 0.55, "claude-haiku-4-5": 0.55, "gpt-4o": 0.8, "claude-sonnet-4-5": 0.97}
# One demo batch is small: let reflect learn from a few dozen outcomes per class.
DEMO_LEARNING = {"min_samples": 10, "min_version_samples": 10}


def prepare(database: Path, files: list[Path] | None) -> Path:
    """A fresh demo database and one JSONL file with every example job."""
    database.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    lines = [line for source in files or [Path(p) for p in EXAMPLES] for line in read_lines(source)]
    merged = database.parent / "demo-batch.jsonl"
    merged.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return merged


def kinds_batch(kinds_file: Path) -> Path:
    """The example batch beside a kinds file: the same name with .jsonl."""
    return kinds_file.with_suffix(".jsonl")


def run_demo(
    database: Path, files: list[Path] | None, timeout_s: float = 600.0, kinds: list[Path] | None = None
) -> tuple[SubmitReport, dict[str, Any], float, ReflectRun | None]:
    """Run the batch end to end, then reflect on its outcomes once; return the submission report,
    the summary, the seconds the batch took and what reflect did. With `kinds` (kinds files), those
    kinds are declared and, unless `files` are given, their example batches are the batch."""
    if kinds and not files:
        files = [kinds_batch(path) for path in kinds]
    from tierflow.tasks.reflect import run_reflect
    from tierflow.tasks.runtime import runtime_for
    from tierflow.worker.cli import wait_for_batch
    from tierflow.worker.embedded import embedded_worker

    batch = prepare(database, files)
    with ProviderServer(port=0, models=list(DEMO_STRENGTHS), strengths=DEMO_STRENGTHS) as server:
        settings = load_settings(
            database_url=f"sqlite:///{database}",
            broker_url="memory://localhost/",
            result_backend="cache+memory://",
            tiers=DEMO_TIERS,
            openai_base_url=server.openai_base_url,
            anthropic_base_url=server.anthropic_base_url,
            learning=DEMO_LEARNING,
            kinds=[str(path) for path in kinds or []],
        )
        app = create_app(settings)
        runtime = runtime_for(app)
        started = time.perf_counter()
        with embedded_worker(app, runtime):
            report = submit_file(app, runtime, batch)
            if report.batch_id is None:
                return report, {}, 0.0, None
            wait_for_batch(runtime, report.batch_id, timeout_s)
        elapsed = time.perf_counter() - started
    with transaction(runtime.sessions) as session:
        rows = batch_results(session, report.batch_id)
    return report, summarize(rows), elapsed, run_reflect(runtime)
