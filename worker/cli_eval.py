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
from tierflow.routing.errors import InputError
from tierflow.routing.semantic import Matrix, SemanticRoutes
from tierflow.routing.semantic_linear import LinearRoutes
from tierflow.routing.semantic_tree import Classifier, Fit, TreeRoutes
from tierflow.worker.cli_eval_tree import check_against, fit_tree, read_tree
from tierflow.worker.settings import load_settings

DEFAULT_CACHE = Path(".tierflow/embeddings")

eval_app = typer.Typer(add_completion=False, no_args_is_help=True)
out = Console(soft_wrap=True)


class EncoderKind(str, Enum):
    LOCAL = "local"
    OPENAI = "openai"


class ClassifierKind(str, Enum):
    NEAREST = "nearest"  # routing.semantic: nearest examples or centroids, the workers' stage
    LINEAR = "linear"  # routing.semantic_linear: a softmax regression fitted on the embeddings


Routes = Classifier | TreeRoutes


@dataclass(frozen=True)
class SemanticReport:
    """What `tierflow eval semantic --json` prints."""

    n: int
    accuracy: float | None
    decided_share: float | None
    decided_accuracy: float | None
    oos_recall: float | None
    queries_per_s: float
    decisions_per_s: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "decided_share": self.decided_share,
            "decided_accuracy": self.decided_accuracy,
            "oos_recall": self.oos_recall,
            "queries_per_s": self.queries_per_s,
            "decisions_per_s": self.decisions_per_s,
        }


@dataclass(frozen=True)
class Predicted:
    """One query's outcome as the report counts it: the route reached, and whether it was decided."""

    route: str
    decided: bool


def predict(routes: Routes, vectors: Matrix) -> list[Predicted]:
    """Flat routes decide a route; a tree reaches a leaf, decided only when no level was unsure."""
    if isinstance(routes, TreeRoutes):
        return [Predicted(m.leaf, m.decided) for m in routes.classify(vectors)]
    return [Predicted(m.route, m.decided) for m in routes.classify(vectors)]


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


def report(
    matches: list[Predicted], test: list[LabelledText], seconds: float, classify_s: float = 0.0
) -> SemanticReport:
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
        queries_per_s=_rate(len(test), seconds),
        decisions_per_s=_rate(len(test), classify_s),
    )


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


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
    classifier: Annotated[ClassifierKind, typer.Option(help="nearest (examples) or linear (fitted)")] = (
        ClassifierKind.NEAREST
    ),
    hierarchy: Annotated[
        Path | None, typer.Option(help='JSON {"domain": ["intent", ...]}: route by domain, then intent')
    ] = None,
) -> None:
    """Fit the semantic stage on --train and measure it on --test."""
    train_rows, test_rows = read_labelled(train), read_labelled(test)
    query_encoder = make_encoder(encoder, model, batch_size)
    routes = fit_any(CachedEncoder(query_encoder, cache_dir), train_rows, train, classifier, hierarchy)
    query_encoder.encode([row.text for row in test_rows[:batch_size]])  # warm-up: loading is not query time
    texts = [row.text for row in test_rows]
    matches, seconds, classify_s = classify_texts(routes, query_encoder, texts, batch_size)
    result = report(matches, test_rows, seconds, classify_s).as_dict()
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    for name, value in result.items():
        out.print(f"{name:>16}  {value}", markup=False, highlight=False)


def fit_level(kind: ClassifierKind) -> Fit:
    """How one level (or the flat routes) is fitted from route examples and negatives."""
    if kind is ClassifierKind.LINEAR:
        return lambda examples, groups, negatives: LinearRoutes.fit(
            examples, negatives=negatives, groups=groups
        )
    return lambda examples, groups, negatives: SemanticRoutes.fit(
        {route: np.concatenate([examples[name] for name in names]) for route, names in groups.items()},
        negatives=negatives,
    )


def fit_any(
    encoder: Encoder, rows: list[LabelledText], path: Path, kind: ClassifierKind, hierarchy: Path | None
) -> Routes:
    """Flat routes of `kind`, or a tree of them when a hierarchy file is given."""
    if hierarchy is not None:
        tree, text = read_tree(hierarchy)
        check_against(tree, text, hierarchy, rows, path)
        return fit_tree(encoder, tree, rows, fit_level(kind))
    if kind is ClassifierKind.NEAREST:
        return fit_routes(encoder, rows)
    return fit_flat(encoder, rows, path, fit_level(kind))


def fit_flat(encoder: Encoder, rows: list[LabelledText], path: Path, fit: Fit) -> Classifier:
    """Flat routes fitted by `fit` from the in-scope rows; the out-of-scope ones are negatives."""
    vectors = encoder.encode([row.text for row in rows])
    by_intent: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_intent.setdefault(row.intent, []).append(index)
    negatives = by_intent.pop(OUT_OF_SCOPE, [])
    if not by_intent:
        raise InputError(str(path), 0, "intent", "no in-scope examples: every intent is oos")
    examples = {intent: vectors[found] for intent, found in sorted(by_intent.items())}
    return fit(examples, {name: (name,) for name in examples}, vectors[negatives] if negatives else None)


def register(cli: typer.Typer) -> None:
    """Add `tierflow eval` to the main command line."""
    cli.add_typer(eval_app, name="eval", help="Measure the routing stages on labelled data.")
