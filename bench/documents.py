"""Document verdicts by rules on SROIE-shaped files: the eval figures and the time per document.

    .venv/bin/python bench/documents.py                       # ../shared/data/sroie/*.jsonl
    .venv/bin/python bench/documents.py FILE [FILE ...] [--repeats 5]

Prints the `tierflow eval documents` table per file and the median time per
document (µs) of extraction + validation + decision, measured over whole passes.
Owns nothing the product uses; imports routing/ and the eval command only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tierflow.routing.documents import decide_document, extract_fields  # noqa: E402
from tierflow.worker.cli_eval_documents import documents_table, evaluate_documents, read_documents  # noqa: E402

DEFAULT_GLOB = "sroie/*.jsonl"


def time_per_document_us(texts: list[str], repeats: int) -> float:
    """Median over `repeats` passes of one pass's time divided by its documents."""
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for text in texts:
            decide_document(extract_fields(text))
        passes.append((time.perf_counter() - start) / max(len(texts), 1))
    return statistics.median(passes) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    files = args.files or sorted((ROOT.parent / "shared" / "data").glob(DEFAULT_GLOB))
    if not files:
        print("no SROIE files given and none under ../shared/data/sroie", file=sys.stderr)
        return 2
    console = Console()
    for path in files:
        console.print(documents_table(evaluate_documents(path), f"document verdicts by rules: {path}"))
        texts = [document.text for document in read_documents(path)]
        micros = time_per_document_us(texts, args.repeats)
        console.print(f"{len(texts)} documents, {micros:.0f} µs per document (extract + validate + decide)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
