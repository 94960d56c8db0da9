"""`tierflow eval ...`: measure the routing stages on labelled files.

`tierflow eval semantic --train FILE --test FILE` fits the semantic stage
(`routing.semantic`) on the train file's examples and classifies the test file's
texts. Files are JSON Lines `{"text", "intent"}`; intent "oos" marks an
out-of-scope text: in the train file it is no route but a negative for fitting
the thresholds, in the test file it must come out unsure.

Route examples are embedded through an on-disk cache (`providers.encoders`), so a
second run reuses them; test texts are always encoded, because their speed is
measured.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from tierflow.providers.encoders import (
    CachedEncoder,
    Encoder,
    LocalMiniLM,
    OpenAIEmbeddings,
    encode_in_batches,
)
from tierflow.providers.labelled import OUT_OF_SCOPE, LabelledText, fit_routes, read_labelled
from tierflow.routing.semantic import SemanticMatch, SemanticRoutes
from tierflow.worker.settings import load_settings

DEFAULT_CACHE = Path(".tierflow/embeddings")

eval_app = typer.Typer(add_completion=False, no_args_is_help=True)
out = Console(soft_wrap=True)


class EncoderKind(str, Enum):
    LOCAL = "local"
    OPENAI = "openai"


@dataclass(frozen=True)
class SemanticReport:
    """What `tierflow eval semantic --json` prints."""

    n: int
    accuracy: float | None
    decided_share: float | None
    decided_accuracy: float | None
    oos_recall: float | None
    queries_per_s: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "decided_share": self.decided_share,
            "decided_accuracy": self.decided_accuracy,
            "oos_recall": self.oos_recall,
            "queries_per_s": self.queries_per_s,
        }


def classify_texts(
    routes: SemanticRoutes, encoder: Encoder, texts: list[str], batch_size: int
) -> tuple[list[SemanticMatch], float]:
    """The matches of `texts`, encoded and classified in batches, and the seconds it took."""
    started = time.perf_counter()
    matches = routes.classify(encode_in_batches(encoder, texts, batch_size))
    return matches, time.perf_counter() - started


def report(matches: list[SemanticMatch], test: list[LabelledText], seconds: float) -> SemanticReport:
    """The metrics of `matches` against the test file's intents."""
    in_scope = [(m, row.intent) for m, row in zip(matches, test, strict=True) if row.intent != OUT_OF_SCOPE]
    decided = [(m, intent) for m, intent in in_scope if m.decided]
    oos = [m for m, row in zip(matches, test, strict=True) if row.intent == OUT_OF_SCOPE]
    return SemanticReport(
        n=len(test),
        accuracy=_share(m.route == intent for m, intent in in_scope),
        decided_share=_share(m.decided for m, _ in in_scope),
        decided_accuracy=_share(m.route == intent for m, intent in decided),
        oos_recall=_share(not m.decided for m in oos),
        queries_per_s=round(len(test) / seconds, 1) if seconds > 0 else float("inf"),
    )


def _share(flags: Iterable[bool]) -> float | None:
    values = list(flags)
    return round(float(np.mean(values)), 4) if values else None


def make_encoder(kind: EncoderKind, model: str, batch_size: int) -> Encoder:
    """The encoder the command asks for; OpenAI's URL and key come from the settings."""
    if kind is EncoderKind.LOCAL:
        return LocalMiniLM(batch_size=batch_size)
    settings = load_settings()
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return OpenAIEmbeddings(model, base_url=settings.openai_base_url, api_key=key, batch_size=batch_size)


@eval_app.command()
def semantic(
    train: Annotated[Path, typer.Option(help="JSONL {text, intent}: the route examples")],
    test: Annotated[Path, typer.Option(help="JSONL {text, intent}: the queries")],
    encoder: Annotated[EncoderKind, typer.Option(help="local (all-MiniLM-L6-v2) or openai")] = (
        EncoderKind.LOCAL
    ),
    model: Annotated[str, typer.Option(help="Embeddings model for --encoder openai")] = (
        "text-embedding-3-small"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    cache_dir: Annotated[Path, typer.Option(help="Where route embeddings are cached")] = DEFAULT_CACHE,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per encoder call")] = 64,
) -> None:
    """Fit the semantic stage on --train and measure it on --test."""
    train_rows, test_rows = read_labelled(train), read_labelled(test)
    query_encoder = make_encoder(encoder, model, batch_size)
    routes = fit_routes(CachedEncoder(query_encoder, cache_dir), train_rows)
    query_encoder.encode([row.text for row in test_rows[:batch_size]])  # warm-up: loading is not query time
    matches, seconds = classify_texts(routes, query_encoder, [row.text for row in test_rows], batch_size)
    result = report(matches, test_rows, seconds).as_dict()
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    for name, value in result.items():
        out.print(f"{name:>16}  {value}", markup=False, highlight=False)


def register(cli: typer.Typer) -> None:
    """Add `tierflow eval` to the main command line."""
    cli.add_typer(eval_app, name="eval", help="Measure the routing stages on labelled data.")
