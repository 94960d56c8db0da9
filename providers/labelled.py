"""Labelled texts (`{"text", "intent"}` JSON Lines) and semantic routes fitted from them.

Shared by `tierflow eval semantic` and the workers' semantic stage. The intent
"oos" marks an out-of-scope example: it is no route, but a negative that the
thresholds are fitted to refuse.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tierflow.providers.encoders import Encoder
from tierflow.routing.errors import InputError
from tierflow.routing.jsonl import strict_records
from tierflow.routing.semantic import SemanticConfig, SemanticRoutes

OUT_OF_SCOPE = "oos"


@dataclass(frozen=True)
class LabelledText:
    text: str
    intent: str


def read_labelled(path: Path) -> list[LabelledText]:
    """Every line of a `{"text", "intent"}` JSONL file; InputError names the file, line and field."""
    source = str(path)
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InputError(source, 0, "file", f"cannot be read: {exc.strerror or exc}") from None
    rows: list[LabelledText] = []
    with stream:
        for item in strict_records(stream, source):
            record, number = item.value, item.line
            if not isinstance(record, dict):
                raise InputError(source, number, "<line>", "must be a JSON object")
            for field in ("text", "intent"):
                value = record.get(field)
                if not isinstance(value, str) or not value.strip():
                    raise InputError(source, number, field, "must be a non-empty string")
            rows.append(LabelledText(record["text"], record["intent"]))
    if not rows:
        raise InputError(source, 0, "file", "has no examples")
    return rows


def fit_routes(
    encoder: Encoder, train: list[LabelledText], config: SemanticConfig | None = None
) -> SemanticRoutes:
    """Routes from the in-scope train examples; the out-of-scope ones fit the thresholds."""
    vectors = encoder.encode([row.text for row in train])
    by_intent: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(train):
        by_intent[row.intent].append(index)
    negatives = by_intent.pop(OUT_OF_SCOPE, [])
    if not by_intent:
        raise InputError("train", 0, "intent", "no in-scope examples: every intent is oos")
    examples = {intent: vectors[rows] for intent, rows in sorted(by_intent.items())}
    return SemanticRoutes.fit(examples, config, vectors[negatives] if negatives else None)
