"""`tierflow eval ...`: measure the routing stages on labelled files.

`tierflow eval semantic --train FILE --test FILE` fits the semantic stage
(`providers.semantic_fit`, the workers' own fitting) on the train file's examples
and classifies the test file's texts. Files are JSON Lines `{"text", "intent"}`;
intent "oos" marks an out-of-scope text: in the train file it is no route but a
negative for fitting the thresholds, in the test file it must come out unsure.
`--per-intent` adds each intent's figures; `--hierarchy FILE --compare` fits the
flat routes and the tree on the same embeddings and reports both side by side.

Route examples are embedded through an on-disk cache (`providers.encoders`), so a
second run reuses them; test texts are always encoded, because their speed is
measured. The figures themselves are `worker.cli_eval_semantic`'s.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from tierflow.providers.encoders import (
    CachedEncoder,
    Encoder,
    LocalMiniLM,
    OpenAIEmbeddings,
    encode_in_batches,
)
from tierflow.providers.labelled import read_labelled
from tierflow.providers.semantic_fit import ClassifierKind, Predicted, Routes, fit_classifier, predict
from tierflow.routing.errors import InputError
from tierflow.worker.cli_eval_semantic import per_intent, print_reports, report
from tierflow.worker.settings import load_settings

DEFAULT_CACHE = Path(".tierflow/embeddings")

eval_app = typer.Typer(add_completion=False, no_args_is_help=True)


class EncoderKind(str, Enum):
    LOCAL = "local"
    OPENAI = "openai"


def classify_texts(
    routes: Routes, encoder: Encoder, texts: list[str], batch_size: int
) -> tuple[list[Predicted], float, float]:
    """The outcomes of `texts`, encoded and classified in batches; seconds in all, and classifying."""
    started = time.perf_counter()
    vectors = encode_in_batches(encoder, texts, batch_size)
    encoded = time.perf_counter()
    matches = predict(routes, vectors)
    done = time.perf_counter()
    return matches, done - started, done - encoded


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
    classifier: Annotated[ClassifierKind, typer.Option(help="nearest (examples) or linear (fitted)")] = (
        ClassifierKind.NEAREST
    ),
    hierarchy: Annotated[
        Path | None, typer.Option(help='JSON {"domain": ["intent", ...]}: route by domain, then intent')
    ] = None,
    compare: Annotated[
        bool, typer.Option(help="With --hierarchy: report the flat routes and the tree side by side")
    ] = False,
    intents: Annotated[bool, typer.Option("--per-intent", help="Add each intent's figures")] = False,
) -> None:
    """Fit the semantic stage on --train and measure it on --test."""
    if compare and hierarchy is None:
        raise InputError(
            "tierflow eval semantic", 0, "--compare", "needs --hierarchy FILE: flat against what"
        )
    train_rows, test_rows = read_labelled(train), read_labelled(test)
    query_encoder = make_encoder(encoder, model, batch_size)
    route_encoder = CachedEncoder(query_encoder, cache_dir)
    shapes = {"flat": None, "hierarchical": hierarchy} if compare else {"": hierarchy}
    fitted = {
        name: fit_classifier(route_encoder, train_rows, train, classifier, tree)
        for name, tree in shapes.items()
    }
    query_encoder.encode([row.text for row in test_rows[:batch_size]])  # warm-up: loading is not query time
    texts = [row.text for row in test_rows]
    results: dict[str, dict[str, Any]] = {}
    for name, routes in fitted.items():
        matches, seconds, classify_s = classify_texts(routes, query_encoder, texts, batch_size)
        results[name] = dict(report(matches, test_rows, seconds, classify_s).as_dict())
        if intents:
            results[name]["per_intent"] = per_intent(matches, test_rows)
    if as_json:
        sys.stdout.write(json.dumps(results if compare else results[""]) + "\n")
        return
    print_reports(results if compare else {"value": results[""]})


def register(cli: typer.Typer) -> None:
    """Add `tierflow eval` to the main command line."""
    cli.add_typer(eval_app, name="eval", help="Measure the routing stages on labelled data.")
