"""The benchmark's jobs: the example batches, repeated with unique ids and varied text.

The variation is a short letters-only reference appended to the text, so every job
is distinct content (no deduplication on id or hash) while the routing signals the
examples were written for (markers, numbers, dates, totals) stay as they are.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

EXAMPLE_FILES = ("support.jsonl", "documents.jsonl", "prompts.jsonl")


def load_examples(examples_dir: Path) -> list[dict[str, Any]]:
    """Every example job of the project, in file order."""
    examples = []
    for name in EXAMPLE_FILES:
        for line in (examples_dir / name).read_text(encoding="utf-8").split("\n"):
            if line.strip():
                examples.append(json.loads(line))
    if not examples:
        raise ValueError(f"no example jobs in {examples_dir}")
    return examples


def letters(number: int) -> str:
    """`number` written in lower-case letters (no digits: prompts do arithmetic on digits)."""
    alphabet = string.ascii_lowercase
    word = ""
    while True:
        number, digit = divmod(number, len(alphabet))
        word = alphabet[digit] + word
        if number == 0:
            return word


def varied(example: dict[str, Any], job_id: str, reference: str) -> dict[str, Any]:
    """A copy of the example under a new id, its text ending with a reference of its own."""
    payload = dict(example["payload"])
    field = "prompt" if example["kind"] == "prompt" else "text"
    payload[field] = f"{payload[field]} (ref {reference})"
    return {**example, "id": job_id, "payload": payload}


def make_jobs(examples: list[dict[str, Any]], count: int, tag: str) -> list[dict[str, Any]]:
    """`count` jobs cycling through the examples; ids start with `tag`, unique within a run."""
    jobs = []
    for index in range(count):
        example = examples[index % len(examples)]
        jobs.append(varied(example, f"{tag}-{index:05d}-{example['id']}", letters(index)))
    return jobs


def job_text(job: dict[str, Any]) -> str:
    payload = job["payload"]
    return str(payload.get("prompt") or payload.get("text"))


def write_jsonl(path: Path, jobs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(job, ensure_ascii=False) + "\n" for job in jobs), encoding="utf-8")
    return path
